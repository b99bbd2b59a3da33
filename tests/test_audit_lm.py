"""``eis audit --lm`` on the smoke suite's backdoored LM and its clean twin: the verdicts, the JSON contract,
escaping on the page, and one-line refusals of bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import types

import pytest
from typer.testing import CliRunner

from eis.cli import app

LM_SMOKE = ("lm-backdoor", "lm-clean-twin")
HOSTILE = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The smoke LM cases, their targets (planted / probe pairs) and clean texts, as files."""
    from eis.zoo import build_case
    from eis.zoo.suites import load_suite

    cases = {c.name: c for c in (build_case(s)[0] for s in load_suite("smoke") if s.name in LM_SMOKE)}
    d = tmp_path_factory.mktemp("audit_lm")
    back = cases["lm-backdoor"]
    truth = back.truth()
    targets = [" ".join(p["target"]) for p in truth.pairs]
    trigger = " ".join(truth.pairs[0]["trigger"])
    (d / "targets.txt").write_text("\n".join(targets) + "\n")
    texts = back.texts(40) + [f"{HOSTILE} {trigger} the"]  # a hostile text that holds the trigger
    (d / "texts.txt").write_text("\n".join(texts) + "\n")
    return types.SimpleNamespace(dir=d, cases=cases, targets=targets, trigger=trigger)


def run(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["audit", *args], env={"COLUMNS": "400"})
    return res.exit_code, res.output


def audit_case(lm, name: str) -> tuple[int, dict, str, str]:
    out = lm.dir / name
    code, output = run([str(lm.cases[name].root), "--lm", "--targets", str(lm.dir / "targets.txt"),
                        "--data", str(lm.dir / "texts.txt"), "--out", str(out)])  # fmt: skip
    js = out / "audit.json"
    page = (out / "audit.html").read_text() if (out / "audit.html").exists() else ""
    return code, (json.loads(js.read_text()) if js.exists() else {}), page, output


@pytest.fixture(scope="module")
def backdoor(lm):
    return audit_case(lm, "lm-backdoor")


@pytest.fixture(scope="module")
def twin(lm):
    return audit_case(lm, "lm-clean-twin")


def test_flags_the_backdoor_with_its_targets(lm, backdoor) -> None:
    code, js, page, output = backdoor
    assert code == 0, output
    assert js["verdict"] == "suspicious" and js["suspected_target"] in lm.targets
    assert [t["target"] for t in js["targets"] if t["flagged"]] == lm.targets
    first = js["targets"][0]
    assert first["best"] is not None and first["tools"]["target_as_prompt"]["reasr"] == 0.0
    exhaustive = first["tools"]["exhaustive_trigger_search"]
    assert lm.trigger in [t["trigger"] for t in exhaustive["triggers"] if t["emits"]]
    assert all(lm.targets[0] in t["continuation"] for t in exhaustive["triggers"] if t["emits"])
    assert first["tools"]["gcg"]["queries"] <= 4096
    assert any(lm.trigger in s["triggers"] for s in js["inputs"])  # the planted text is screened
    assert "verdict: suspicious" in output


def test_clears_the_clean_twin(lm, twin) -> None:
    code, js, _, output = twin
    assert code == 0, output
    assert js["verdict"] == "no evidence" and js["suspected_target"] is None
    assert not any(t["flagged"] for t in js["targets"])
    assert all(r["reasr"] == 0.0 for t in js["targets"] for r in t["tools"].values())
    assert js["inputs"] == []  # no trigger found, no text continues into a target


def test_json_contract(backdoor) -> None:
    _, js, _, _ = backdoor
    image_keys = {"verdict", "suspected_target", "verdict_rule", "trusted_detector", "detectors", "inputs",
                  "model", "calibration", "notes", "runtime_s", "eis_version"}  # fmt: skip
    assert image_keys | {"model_kind", "targets", "track_record"} <= set(js)
    assert js["model_kind"] == "lm" and js["runtime_s"] > 0
    assert {"tpr", "fpr", "n_planted", "n_probe", "text"} <= set(js["track_record"])
    from eis.audit.lm import TRACK_RECORD

    assert f"{TRACK_RECORD['n_audited']} models audited" in js["track_record"]["text"]
    names = [d["name"] for d in js["detectors"]]
    assert names == [
        "gcg", "random_trigger_search", "exhaustive_trigger_search", "target_as_prompt", "trigger_anomaly"
    ]  # fmt: skip
    scan = js["detectors"][-1]
    assert scan["status"] == "ok" and scan["flagged"] is None and scan["details"]["n_candidates"] >= 10
    assert "ROC-AUC" in scan["track_record"]["text"]
    for d in js["detectors"]:
        assert {"name", "control", "score", "flagged", "status", "reason", "track_record", "details"} <= set(
            d
        )
        assert d["track_record"]["text"]
    assert js["model"]["clean_accuracy"] > js["model"]["chance_accuracy"]


def test_page_escapes_user_strings(lm, backdoor) -> None:
    from eis.audit.lm import LMAuditReport, render_lm_page

    _, js, page, _ = backdoor
    assert HOSTILE not in page and "&lt;script&gt;" in page  # the screened hostile text, escaped
    fields = {f.name for f in dataclasses.fields(LMAuditReport)}
    report = LMAuditReport(**{k: v for k, v in js.items() if k in fields})
    for t in report.targets:
        t["target"] = HOSTILE
        for r in t["tools"].values():
            for trig in r["triggers"]:
                trig["trigger"] = trig["continuation"] = HOSTILE
    report.suspected_target = HOSTILE
    html = render_lm_page(report)
    assert "<script" not in html and html.count("&lt;script&gt;") >= 3


def _copy(src, dst, *names: str):
    dst.mkdir()
    for n in names:
        shutil.copy(src / n, dst / n)
    return dst


def _save_model(dst, tokenizer_from, vocab: int, nan: bool = False, zero: bool = False):
    """A GPT-2 with ``vocab`` embedding rows saved as safetensors, with the smoke tokenizer beside it."""
    import torch
    from transformers import GPT2LMHeadModel

    from eis.zoo.language.lm import gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(vocab, 32, 1))
    with torch.no_grad():
        for p in model.parameters():
            if zero:
                p.zero_()
        if nan:
            model.transformer.wte.weight[5] = float("nan")
    model.save_pretrained(str(dst))
    for n in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / n, dst / n)
    return dst


def test_bad_inputs_one_line_exit_2(lm, tmp_path) -> None:
    root = lm.cases["lm-backdoor"].root
    targets, texts = str(lm.dir / "targets.txt"), str(lm.dir / "texts.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "unk.txt").write_text("qqqzzz lafel\n")
    pickled = _copy(root, tmp_path / "pickled", "config.json", "tokenizer.json", "tokenizer_config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    no_tok = _copy(root, tmp_path / "no_tok", "config.json", "model.safetensors")
    no_config = _copy(root, tmp_path / "no_config", "model.safetensors")
    small = _save_model(tmp_path / "small", root, vocab=64)
    nan = _save_model(tmp_path / "nan", root, vocab=220, nan=True)
    zero = _save_model(tmp_path / "zero", root, vocab=220, zero=True)
    cases = [
        ([str(root / "config.json")], "is not a directory"),
        ([str(no_config)], "has no config.json"),
        ([str(pickled)], "--trust-pickle"),
        ([str(no_tok)], "has no tokenizer"),
        ([str(small)], "embedding has 64 rows"),
        ([str(root), "--targets", str(tmp_path / "empty.txt")], "is empty"),
        ([str(root), "--data", str(tmp_path / "empty.txt")], "is empty"),
        ([str(root), "--targets", str(tmp_path / "unk.txt")], "outside the tokenizer's vocabulary"),
        ([str(root), "--targets", str(tmp_path / "missing.txt")], "does not exist"),
        ([str(nan)], "not finite"),
        ([str(zero)], "ignores its input"),
    ]
    for args, message in cases:
        if "--targets" not in args:
            args += ["--targets", targets]
        if "--data" not in args:
            args += ["--data", texts]
        code, output = run([*args, "--lm", "--out", str(tmp_path / "o")])
        assert code == 2, (args, output)
        assert message in output and output.strip().count("\n") == 0, output
    code, output = run([str(root), "--targets", targets, "--data", texts, "--out", str(tmp_path / "o")])
    assert code == 2 and "--targets goes with --lm" in output
    assert not (tmp_path / "o").exists()


def test_pickled_weights_load_only_with_trust(lm, tmp_path) -> None:
    import torch
    from transformers import GPT2LMHeadModel

    from eis.audit.lm import load_lm
    from eis.errors import EisError
    from eis.zoo.language.lm import gpt2_config

    root = lm.cases["lm-backdoor"].root
    d = _copy(root, tmp_path / "bin", "tokenizer.json", "tokenizer_config.json")
    model = GPT2LMHeadModel(gpt2_config(220, 32, 1))
    model.config.save_pretrained(str(d))
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(EisError, match="--trust-pickle"):
        load_lm(d)
    loaded, tok = load_lm(d, trust_pickle=True)
    assert len(tok) == 220 and torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)


def test_shipped_track_record_matches_these_audits(lm, backdoor, twin) -> None:
    """The record shown on the page holds what the rule, each tool and the scan do on these two models, and
    its rates are those of its per-case rows."""
    from eis.audit.lm import TRACK_RECORD, scan_lm
    from eis.shadows.lm_record import summarize_record

    rows = TRACK_RECORD["per_case"]
    for name, (_, js, _, _) in (("lm-backdoor", backdoor), ("lm-clean-twin", twin)):
        assert rows[name]["rule"] == [t["flagged"] for t in js["targets"]], name
        for tool, hits in rows[name]["tools"].items():
            assert hits == [t["tools"][tool]["reasr"] >= 0.5 for t in js["targets"]], (name, tool)
        case = lm.cases[name]
        scan = scan_lm(case.model(), case.tokenizer(), case.texts(100), lm.targets)
        assert scan["score"] == pytest.approx(rows[name]["scan"], abs=1e-6), name
    assert summarize_record(rows) == {k: v for k, v in TRACK_RECORD.items()}
    assert TRACK_RECORD["n_cases"] == len(rows) >= TRACK_RECORD["n_audited"] >= 2


def test_without_targets_the_scan_only(lm, tmp_path) -> None:
    """No --targets: no trigger is searched, the scan runs, the verdict says no evidence and the notes why."""
    root = lm.cases["lm-backdoor"].root
    code, output = run([str(root), "--lm", "--data", str(lm.dir / "texts.txt"), "--out", str(tmp_path)])
    assert code == 0, output
    js = json.loads((tmp_path / "audit.json").read_text())
    assert js["verdict"] == "no evidence" and js["targets"] == [] and js["inputs"] == []
    assert [d["name"] for d in js["detectors"]] == ["trigger_anomaly"]
    assert any("No targets were given" in n for n in js["notes"])
    assert "trigger_anomaly: anomaly index" in output


def test_scan_candidates_leave_out_the_frequent_head(lm, monkeypatch) -> None:
    """Worked by hand: 9 words, the head (0.5 of them) is the 2 most frequent (3 + 2 >= 4.5); the rest by
    count, then alphabetically; target first words come first; a word the tokenizer does not know is out."""
    import eis.audit.lm as audit_lm

    monkeypatch.setattr(audit_lm, "SCAN_HEAD", 0.5)
    tok = lm.cases["lm-backdoor"].tokenizer()
    words = lm.cases["lm-backdoor"].texts(1)[0].split()
    a, b, c, d, e = list(dict.fromkeys(w for w in words if w not in {".", "?"}))[:5]
    texts = [f"{a} {a} {a} {b} {b} {c} {d}", f"{e} qqqzzz"]
    assert audit_lm.scan_candidates(tok, texts, []) == sorted([c, d, e])
    assert audit_lm.scan_candidates(tok, texts, [f"{e} {a}", f"{a} {b}"]) == [e, a, *sorted([c, d])]


def test_a_failing_scan_is_recorded_and_the_audit_goes_on(lm, monkeypatch) -> None:
    """The scan's tool raising is a 'failed' entry with the reason, not a crashed audit."""
    from eis.audit.lm import audit_lm
    from eis.tools.lm_detect.trigger_scan import TriggerAnomaly

    def boom(self, task):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(TriggerAnomaly, "inspect", boom)
    case = lm.cases["lm-backdoor"]
    rep = audit_lm(case.model(), case.tokenizer(), [], case.texts(60), progress=False)
    scan = rep.detectors[-1]
    assert scan["status"] == "failed" and "RuntimeError: out of memory" in scan["reason"]
    assert any("out of memory" in n for n in rep.notes) and rep.verdict == "no evidence"
