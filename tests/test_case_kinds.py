"""Case kinds: the built-in kinds are registered, and a kind registered here (no change to eis) is read from
a suite table, built, cached and opened through the zoo's own paths."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import eis.zoo
from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.case import Case
from eis.zoo.kinds import (
    KINDS,
    CaseKind,
    UnknownKind,
    kind_named,
    kind_of,
    kinds,
    register_kind,
    spec_kind,
    table_kinds,
)
from eis.zoo.pool import _registering_modules, build_specs
from eis.zoo.suites import load_suite


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """A one-weight "model" whose weight is ``value``."""

    name: str
    value: float = 1.0
    population: str | None = None
    role: str | None = None

    @property
    def case_id(self) -> str:
        blob = json.dumps({"kind": "toy", "name": self.name, "value": self.value}, sort_keys=True)
        return "toy" + hashlib.sha256(blob.encode()).hexdigest()[:13]


class ToyCase(Case):
    def model(self, device: str | torch.device | None = None) -> nn.Module:
        model = nn.Linear(1, 1)
        model.load_state_dict(artifact.load_weights(self.root))
        return model.eval()


BUILT: list[str] = []


def build_toy(spec: ToySpec, *, force: bool = False, progress=None) -> tuple[ToyCase, bool]:
    root = artifact.zoo_dir() / spec.case_id
    if not force and root.exists():
        return ToyCase(root), False
    BUILT.append(spec.name)
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(spec.value)
        model.bias.zero_()
    visible = {"id": spec.case_id, "name": spec.name, "kind": "toy", "population": None, "role": None}
    truth = {"spec": {"name": spec.name, "value": spec.value}}
    root = artifact.write_artifact(
        spec.case_id, model, visible, truth, {"none": torch.zeros(0)}, replace=force
    )
    return ToyCase(root), True


def toy_entry(entry: dict, where: str) -> ToySpec:
    if "name" not in entry:
        raise EisError(f"{where}: a toy case is missing the field 'name'")
    return ToySpec(**entry)


TOY = CaseKind(name="toy", spec=ToySpec, tables={"toy": toy_entry}, build=build_toy, case=ToyCase)


@pytest.fixture
def toy(monkeypatch, fresh_home):
    """The toy kind registered for one test (the registry is restored afterwards), in an empty EIS_HOME."""
    monkeypatch.setattr(KINDS, "_items", dict(KINDS._items))
    BUILT.clear()
    return register_kind(TOY)


def _suite(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kinds.toml"
    path.write_text(text)
    return str(path)


def test_builtin_kinds_are_registered():
    from eis.zoo.circuits.case import CircuitCase
    from eis.zoo.rules.case import RuleCase

    assert [k.name for k in kinds()] == ["image", "circuit", "rule", "features", "lm"]
    assert list(table_kinds()) == ["case", "population", "circuit", "rule", "features", "lm", "lm_population"]
    assert kind_named("image").case_class() is Case
    assert kind_named("circuit").case_class() is CircuitCase
    assert kind_named("rule").case_class() is RuleCase
    image = eis.zoo.CaseSpec("x", "digits", "cnn", {"kind": "clean"})
    assert spec_kind(image).name == "image" and spec_kind(image).devices
    assert spec_kind(image).on_device(image, "cuda").device == "cuda"
    circuit = eis.zoo.CircuitSpec("c", "reverse")
    assert spec_kind(circuit).name == "circuit" and spec_kind(circuit).on_device(circuit, "cuda") is circuit
    assert spec_kind(eis.zoo.RuleSpec("r", "linear_mod")).name == "rule"
    with pytest.raises(UnknownKind, match="registered: image, circuit, rule, features, lm"):
        spec_kind(object())
    with pytest.raises(UnknownKind, match="unknown case kind 'audio'"):
        kind_named("audio")


def test_circuit_and_rule_modules_stay_unimported():
    """``import eis.zoo`` leaves the circuit and rule kinds' modules alone until they are used."""
    code = (
        "import sys, eis.zoo\n"
        "print(sorted(m for m in sys.modules if m.startswith(('eis.zoo.circuits', 'eis.zoo.rules'))))\n"
        "eis.zoo.load_suite('circuits')\n"
        "print('eis.zoo.circuits.spec' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]


def test_table_names_are_claimed_once(toy):
    with pytest.raises(ValueError, match="'case' is already used by case kind 'image'"):
        register_kind(dataclasses.replace(TOY, name="toy2", tables={"case": toy_entry}))
    with pytest.raises(ValueError, match="'defaults' is already used by the suite file"):
        register_kind(dataclasses.replace(TOY, name="toy2", tables={"defaults": toy_entry}))


def test_a_kind_registered_outside_eis_goes_through_the_zoo(toy, tmp_path):
    suite = _suite(
        tmp_path,
        '[defaults]\ndataset = "digits"\narch = "cnn"\n\n'  # image defaults never reach toy entries
        '[[toy]]\nname = "toy-a"\nvalue = 2.0\n\n[[toy]]\nname = "toy-b"\nvalue = 3.0\n\n'
        '[[rule]]\nname = "rule-1"\nfamily = "linear_mod"\nseed = 1\n',
    )
    specs = load_suite(suite)
    assert [(type(s).__name__, s.name) for s in specs] == [
        ("RuleSpec", "rule-1"),  # built-in kinds' tables come first, then kinds registered later
        ("ToySpec", "toy-a"),
        ("ToySpec", "toy-b"),
    ]
    toys = specs[1:]
    case, trained = eis.zoo.build_case(toys[0])
    assert trained and isinstance(case, ToyCase) and kind_of(case) == "toy"
    assert case.model().weight.item() == 2.0
    again, trained = eis.zoo.build_case(toys[0])
    assert not trained and again.root == case.root
    opened = eis.zoo.open_case(case.root)
    assert type(opened) is ToyCase and opened.name == "toy-a"
    assert isinstance(eis.zoo.cached(toys[0]), ToyCase) and eis.zoo.cached(toys[1]) is None
    built = build_specs(toys, device="cpu")  # the pool: device handling, cache, build, in suite order
    assert [c.name for c in built] == ["toy-a", "toy-b"] and BUILT == ["toy-a", "toy-b"]
    assert eis.zoo.load("toy-b").id == toys[1].case_id
    assert _registering_modules(toys) == [ToySpec.__module__]  # worker processes import it


def test_toy_suite_entry_errors_name_the_suite(toy, tmp_path):
    with pytest.raises(EisError, match=r"suite '.*kinds.toml': a toy case is missing the field 'name'"):
        load_suite(_suite(tmp_path, "[[toy]]\nvalue = 1.0\n"))
    with pytest.raises(EisError, match=r"'toy' must be an array of tables, written \[\[toy\]\]"):
        load_suite(_suite(tmp_path, '[toy]\nname = "x"\n'))


def test_unknown_suite_table_lists_the_registered_ones(tmp_path):
    suite = _suite(tmp_path, '[[bogus]]\nname = "x"\n')
    with pytest.raises(
        EisError,
        match="unknown top-level key 'bogus'; valid: description, defaults, tracks, case, population, "
        "circuit, rule, features, lm, lm_population$",
    ):
        load_suite(suite)


def test_unknown_suite_table_lists_a_registered_kinds_table(toy, tmp_path):
    with pytest.raises(
        EisError,
        match="valid: description, defaults, tracks, case, population, circuit, rule, features, lm, "
        "lm_population, toy$",
    ):
        load_suite(_suite(tmp_path, '[[bogus]]\nname = "x"\n'))


def _write(case_id: str, visible: dict) -> Path:
    model = nn.Linear(1, 1)
    return artifact.write_artifact(case_id, model, {"id": case_id, **visible}, {}, {"none": torch.zeros(0)})


def test_a_manifest_without_kind_opens_as_an_image_case(fresh_home):
    root = _write("old-image-case", {"name": "old", "dataset": "digits", "arch": "cnn"})
    assert "kind" not in artifact.read_manifest(root)
    case = eis.zoo.open_case(root)
    assert type(case) is Case and kind_of(case) == "image" and case.dataset == "digits"


def test_an_unregistered_kind_is_named_and_skipped_by_list_built(fresh_home):
    root = _write("audio-case", {"name": "audio-1", "kind": "audio"})
    _write("old-image-case", {"name": "old", "dataset": "digits", "arch": "cnn"})
    with pytest.raises(
        UnknownKind, match="unknown case kind 'audio'; registered: image, circuit, rule, features, lm"
    ):
        eis.zoo.open_case(root)
    assert [c.name for c in eis.zoo.list_built()] == ["old"]
