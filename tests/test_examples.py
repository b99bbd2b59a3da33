"""The documented examples run as written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_custom_dataset_and_arch_example(fresh_home, monkeypatch):
    # the example registers "toy" and "mlp"; keep the global registries as the other tests expect them
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    monkeypatch.setattr(ARCHS, "_items", dict(ARCHS._items))
    spec = importlib.util.spec_from_file_location("example", EXAMPLES / "custom_dataset_and_arch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    case = module.main()
    assert case.dataset == "toy" and case.arch == "mlp"
    assert case.truth().measured["asr"] >= 0.9 and case.meta["clean_accuracy"] >= 0.9


def test_audit_your_model_example(tmp_path):
    spec = importlib.util.spec_from_file_location("audit_example", EXAMPLES / "audit_your_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(tmp_path, epochs=3, nc_steps=30)  # short: the full run is tests/test_audit.py
    written = (tmp_path / "audit" / "audit.json").read_text()
    assert f'"verdict": "{report.verdict}"' in written and (tmp_path / "audit" / "audit.html").exists()
    assert report.detector("neural_cleanse").status == "ok" and len(report.inputs) == 40


def test_custom_circuit_method_example(fresh_home, monkeypatch):
    from eis.tools.base import TOOLS

    monkeypatch.setattr(TOOLS, "_items", dict(TOOLS._items))  # the example registers a tool
    spec = importlib.util.spec_from_file_location("circuit_example", EXAMPLES / "custom_circuit_method.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scores = module.main()
    assert scores["node_auc"] > 0.99 and scores["edge_auc"] > 0.8


def test_shadow_audit_example(tmp_path, monkeypatch):
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    # the shadows register the example's architecture and data; keep the registries as other tests expect
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    monkeypatch.setattr(ARCHS, "_items", dict(ARCHS._items))
    spec = importlib.util.spec_from_file_location("shadow_example", EXAMPLES / "shadow_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(tmp_path, shadows=2, nc_steps=30, kinds=("patch",))  # short: see test_shadows.py
    js = (tmp_path / "shadow-audit" / "audit.json").read_text()
    assert '"source": "shadows"' in js and report.detector("mntd").status == "ok"


def test_every_example_is_run_here():
    # the docs include every script of examples/ (tests/test_docs.py); this file runs each of them
    source = Path(__file__).read_text()
    missing = [p.name for p in sorted(EXAMPLES.glob("*.py")) if f'"{p.name}"' not in source]
    assert not missing, f"examples no test runs: {missing}"
