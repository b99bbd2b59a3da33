"""`eis audit` on models eis did not build: a trojaned model and its clean twin, trained here, not in the zoo.

The architecture (strided convolutions + global average pooling on 12x12 digits) and the trigger (an
L-shaped bracket) come from examples/audit_your_model.py; neither is in the zoo. Both models are trained
once per session.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eis.audit import AuditReport, DetectorResult, build_calibration, decide, load_calibration
from eis.cli import app
from eis.usermodel import save_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "audit_your_model.py"
ARCH = f"{EXAMPLE}:make"
NC_STEPS = "150"  # fewer than the calibrated 300, to keep the tests cheap
K = 8  # triggered inputs among the 40 screened


def example_module() -> types.ModuleType:
    """The example, imported under its own name (so that a pickled model's class resolves to it)."""
    if "audit_your_model" in sys.modules:
        return sys.modules["audit_your_model"]
    spec = importlib.util.spec_from_file_location("audit_your_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_your_model"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def user(tmp_path_factory) -> types.SimpleNamespace:
    """A trojaned StridedNet and its clean twin, saved the ways an engineer would, plus their data."""
    ex = example_module()
    d = tmp_path_factory.mktemp("user")
    x, y = ex.digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1300], perm[1300:]
    troj = ex.train(x[tr], y[tr], poison=0.2, epochs=10)
    clean = ex.train(x[tr], y[tr], epochs=10, seed=1)
    acc_t, asr_t = ex.measure(troj, x[te], y[te])
    acc_c, asr_c = ex.measure(clean, x[te], y[te])
    assert acc_t >= 0.8 and asr_t >= 0.9 and acc_c >= 0.8 and asr_c <= 0.2, (acc_t, asr_t, acc_c, asr_c)
    save_weights(troj, d / "troj.safetensors")
    save_weights(clean, d / "clean.safetensors")
    torch.jit.script(troj).save(str(d / "troj.ts"))
    torch.save(troj, d / "troj.pt")
    np.savez(d / "clean.npz", x=x[te][:200].numpy(), y=y[te][:200].numpy())
    screen = x[te][200:240]
    triggered = torch.arange(len(screen)) % 5 == 0
    ex.write_screen_folder(screen, triggered, d / "screen")
    return types.SimpleNamespace(dir=d, triggered=triggered, troj=troj)


def run_audit(user, model: str, out: str, *extra: str) -> tuple[int, dict, str]:
    res = CliRunner().invoke(
        app,
        ["audit", str(user.dir / model), "--data", str(user.dir / "clean.npz"), "--out", str(user.dir / out),
         "--nc-steps", NC_STEPS, *extra],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    js = user.dir / out / "audit.json"
    return res.exit_code, (json.loads(js.read_text()) if js.exists() else {}), res.output


@pytest.fixture(scope="session")
def troj_audit(user):
    return run_audit(user, "troj.safetensors", "troj", "--arch", ARCH, "--inputs", str(user.dir / "screen"),
                     "--fail-on-suspect")  # fmt: skip


def precision_at_k(inputs: list[dict], triggered: torch.Tensor, k: int) -> float:
    return sum(bool(triggered[r["index"]]) for r in inputs[:k]) / k


def test_flags_the_trojaned_model_with_its_target_and_ranks_triggered_inputs_first(user, troj_audit):
    code, report, output = troj_audit
    assert code == 1, output  # --fail-on-suspect
    assert report["verdict"] == "suspicious" and report["suspected_target"] == 7
    nc = next(d for d in report["detectors"] if d["name"] == "neural_cleanse")
    assert nc["status"] == "ok" and nc["flagged"] and nc["target"] == 7 and nc["score"] >= 2
    assert "TPR" in nc["track_record"]["text"] and nc["track_record"]["n"] >= 8
    mntd = next(d for d in report["detectors"] if d["name"] == "mntd")
    assert mntd["status"] == "not applicable" and "match none" in mntd["reason"]
    assert {d["status"] for d in report["detectors"]} <= {"ok", "refused", "failed", "not applicable"}
    # screening: 40 inputs, file names kept, the 8 triggered ones ranked first
    assert len(report["inputs"]) == 40 and report["inputs"][0]["file"].startswith("img_")
    scores = [r["score"] for r in report["inputs"]]
    assert scores == sorted(scores, reverse=True)
    p = precision_at_k(report["inputs"], user.triggered, K)
    print(
        f"\ntrojaned: NC anomaly index {nc['score']:.2f}, precision@{K} {p:.2f}, {report['runtime_s']:.1f} s"
    )
    assert p >= 0.75
    assert "verdict: suspicious, suspected target 7" in output
    assert (user.dir / "troj" / "audit.html").stat().st_size > 5_000


def test_does_not_flag_the_clean_twin(user):
    code, report, output = run_audit(user, "clean.safetensors", "clean", "--arch", ARCH, "--fail-on-suspect")
    assert code == 0, output
    assert report["verdict"] == "no evidence" and report["suspected_target"] is None
    nc = next(d for d in report["detectors"] if d["name"] == "neural_cleanse")
    print(f"\nclean twin: NC anomaly index {nc['score']:.2f}, {report['runtime_s']:.1f} s")
    assert nc["status"] == "ok" and not nc["flagged"] and nc["score"] < 2
    assert report["inputs"] == []


def test_pickle_needs_trust_and_pickle_and_torchscript_give_the_same_audit(user, troj_audit):
    code, _, output = run_audit(user, "troj.pt", "pkl")
    assert code == 2 and "--trust-pickle" in output and "safetensors" in output
    ref = next(d for d in troj_audit[1]["detectors"] if d["name"] == "neural_cleanse")
    for model, extra in (("troj.pt", ["--trust-pickle", "--arch", ARCH]), ("troj.ts", [])):
        code, report, output = run_audit(
            user, model, f"{model}-audit", "--detectors", "neural_cleanse", *extra
        )
        assert code == 0, output
        nc = report["detectors"][0]
        assert report["verdict"] == "suspicious" and report["suspected_target"] == 7, output
        print(f"\n{model}: NC anomaly index {nc['score']:.2f} (safetensors: {ref['score']:.2f})")
        assert nc["score"] == pytest.approx(ref["score"], rel=0.05)


def test_bad_input_is_one_line_and_exit_2(user, tmp_path):
    narrow = user.dir / "narrow.safetensors"
    save_weights(example_module().make(width=8), narrow)
    (tmp_path / "empty" / "3").mkdir(parents=True)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 3, 12, 12), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "y11.npz", x=np.zeros((4, 1, 12, 12), np.float32), y=np.array([0, 1, 2, 11]))
    cases = [
        (["clean.safetensors", "--arch", f"{EXAMPLE}:nope"], "has no function 'nope'"),
        (["narrow.safetensors", "--arch", ARCH], "shape mismatch"),
        (["clean.safetensors", "--arch", ARCH, "--data", str(tmp_path / "empty")], "holds no images"),
        (["clean.safetensors", "--arch", ARCH, "--data", str(tmp_path / "rgb.npz")], "rejects images shaped"),
        (["clean.safetensors", "--arch", ARCH, "--data", str(tmp_path / "y11.npz")], "model has 10 classes"),
        (["clean.safetensors", "--arch", "no_such_pkg_zz.mod:make"], "cannot import module"),
        (["clean.safetensors", "--arch", ARCH, "--mean", "0.5"], "--mean and --std go together"),
        (
            ["clean.safetensors", "--arch", ARCH, "--arch-kwargs", "[1]"],
            "--arch-kwargs must be a JSON object",
        ),
        (
            [
                "clean.safetensors",
                "--arch",
                ARCH,
                "--detectors",
                "specificity",
                "--inputs",
                str(user.dir / "screen"),
            ],
            "'strip'",
        ),
    ]
    for args, message in cases:
        args = [str(user.dir / args[0]), *args[1:]]
        if "--data" not in args:
            args += ["--data", str(user.dir / "clean.npz")]
        res = CliRunner().invoke(app, ["audit", *args, "--out", str(tmp_path / "o")], env={"COLUMNS": "400"})
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and res.output.strip().count("\n") == 0, res.output


def _det(
    name: str, tpr: float, fpr: float, flagged: bool, target: int | None = None, n: int = 60
) -> DetectorResult:
    rec = {"tpr": tpr, "fpr": fpr, "n": n, "threshold": 1.0}
    score = 1.5 if flagged else 0.5
    return DetectorResult(
        name=name, status="ok", score=score, flagged=flagged, target=target, track_record=rec
    )


def test_verdict_follows_the_best_track_record_not_a_vote():
    weak = [_det("a", 0.5, 0.4, True, 1), _det("b", 0.6, 0.5, True, 2)]
    best = _det("nc", 0.9, 0.1, False, 3)
    assert decide([*weak, best]) == ("nc", "no evidence", None)  # two flags outvoted by one good record
    assert decide([*weak, _det("nc", 0.9, 0.1, True, 3)]) == ("nc", "suspicious", 3)
    assert decide([_det("coin", 0.5, 0.5, True, 1)]) == (None, "no evidence", None)  # J = 0: no trust
    tie = [_det("x", 0.75, 0.25, True, 1), _det("y", 0.625, 0.125, False, 2)]  # same J: lower FPR wins
    assert decide(tie) == ("y", "no evidence", None)
    failed = DetectorResult(name="z", status="failed", reason="boom")
    assert decide([failed]) == (None, "no evidence", None)


def test_calibration_from_store_records_by_hand(tmp_path):
    def row(tool, flaw, score, target_correct=None, control=False):
        s = {"score": score, **({"target_correct": target_correct} if target_correct is not None else {})}
        return {
            "track": "detect",
            "status": "ok",
            "tool": tool,
            "flaw": flaw,
            "scores": s,
            "control": control,
            "arch": "cnn",
            "dataset": "digits",
            "settings": {"steps": 300},
        }

    clean = [0.5, 1.0, 1.5, 2.5]
    troj = [(3.0, 1.0), (2.0, 0.0), (1.9, 1.0), (5.0, 1.0)]
    recs = [row("neural_cleanse", "clean", s) for s in clean]
    recs += [row("neural_cleanse", "patch", s, t) for s, t in troj]
    recs += [
        row("specificity", f, s, control=True) for f, s in (("clean", 0.1), ("clean", 0.3), ("blend", 0.2))
    ]
    table = build_calibration(recs, suites=["smoke"])
    nc = table["detectors"]["neural_cleanse"]
    # paper threshold 2: trojaned 3.0, 2.0, 5.0 flagged (3/4); clean 2.5 flagged (1/4)
    assert (nc["threshold"], nc["tp"], nc["fp"], nc["tpr"], nc["fpr"]) == (2.0, 3, 1, 0.75, 0.25)
    assert nc["target_acc"] == pytest.approx(2 / 3) and nc["n_target"] == 3
    assert nc["auroc"] == pytest.approx(14 / 16)  # pairs (troj > clean): 4 + 3 + 3 + 4 of 16
    sp = table["detectors"]["specificity"]
    assert sp["threshold"] == pytest.approx(0.29)  # 95th percentile of clean {0.1, 0.3}
    assert (sp["tpr"], sp["fpr"]) == (0.0, 0.5) and sp["control"]
    assert table["made_by"]["suites"] == ["smoke"]


def test_shipped_calibration_says_what_made_it():
    table = load_calibration()
    made = table["made_by"]
    assert made["eis_version"] and made["suites"] and "detect" in made["tracks"]
    nc = table["detectors"]["neural_cleanse"]
    assert nc["threshold"] == 2.0 and nc["n"] == nc["n_clean"] + nc["n_trojaned"] >= 8


def test_calibrate_command_rebuilds_the_table(tmp_path):
    from eis.results.store import open_store

    cells = (("clean", 0.4), ("patch", 3.1), ("clean", 1.1), ("blend", 2.6), ("clean", 2.2), ("patch", 1.0))
    for name, part in (("a", range(4)), ("b", range(2, 6))):  # two stores sharing cells k2 and k3
        with open_store(tmp_path / f"{name}.sqlite") as st:
            for i in part:
                st.put(
                    {
                        "key": f"k{i}",
                        "case_id": f"c{i}",
                        "tool": "neural_cleanse",
                        "track": "detect",
                        "status": "ok",
                        "flaw": cells[i][0],
                        "family": "detection",
                        "control": 0,
                        "scores": {"score": cells[i][1]},
                    }
                )
    out = tmp_path / "cal.json"
    res = CliRunner().invoke(app, ["calibrate", "--store", str(tmp_path / "a.sqlite"), "--suites", "mine",
                                   "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    nc = load_calibration(out)["detectors"]["neural_cleanse"]
    assert (nc["tpr"], nc["fpr"], nc["n"]) == (1.0, 0.0, 4)
    both = ["--store", str(tmp_path / "a.sqlite"), "--store", str(tmp_path / "b.sqlite")]
    res = CliRunner().invoke(app, ["calibrate", *both, "--suites", "mine", "--out", str(out)])
    assert res.exit_code == 0, res.output
    nc = load_calibration(out)["detectors"]["neural_cleanse"]
    assert (nc["tpr"], nc["fpr"], nc["n"]) == (2 / 3, 1 / 3, 6)  # pooled, each shared cell once
    res = CliRunner().invoke(app, ["calibrate", "--store", str(tmp_path / "none.sqlite"), "--suites", "x"])
    assert res.exit_code == 2


def test_python_api_is_the_same_report(user):
    ex = example_module()
    z = np.load(user.dir / "clean.npz")
    import eis

    report = eis.audit(
        user.troj,
        torch.from_numpy(z["x"]),
        torch.from_numpy(z["y"]),
        detectors=["specificity", "random_scorer"],
        synthesis=None,
        progress=False,
    )
    assert (
        isinstance(report, AuditReport)
        and report.num_classes == 10
        and report.input_shape == (1, ex.SIZE, ex.SIZE)
    )
    js = report.to_json()
    assert [d["name"] for d in js["detectors"]] == ["specificity", "random_scorer"]
    assert js["verdict"] in ("suspicious", "no evidence") and json.dumps(js)
    assert report.trusted_detector in ("specificity", "random_scorer", None)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium")
def test_audit_page_in_headless_chromium(user, troj_audit):
    from playwright.sync_api import sync_playwright

    page_file = user.dir / "troj" / "audit.html"
    errors: list[str] = []
    requests: list[str] = []
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            assert page.title() == "eis audit: suspicious"
            assert "suspected target class 7" in page.locator(".verdict").inner_text()
            assert page.locator("#detectors + p + table tr").count() == 1 + len(troj_audit[1]["detectors"])
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
            )
            assert broken == 0 and page.evaluate("document.images.length") >= 10
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


def test_learned_detectors_apply_only_to_a_zoo_architecture_with_a_fitted_state(smoke, user, fresh_home):
    import eis

    case = smoke["digits-cnn-clean"]  # a trained zoo cnn (an untrained one would be refused as broken)
    x, y = case.inputs(64)
    report = eis.audit(case.model(), x, y, detectors=["mntd", "weight_stats"], synthesis=None, progress=False)
    for d in report.detectors:
        assert d.status == "not applicable" and "matches the zoo's 'cnn' architecture" in d.reason, d.reason
        assert "no fitted" in d.reason
    with np.load(user.dir / "clean.npz") as f:
        ux, uy = torch.tensor(f["x"]), torch.tensor(f["y"])
    report = eis.audit(user.troj, ux, uy, detectors=["mntd"], synthesis=None, progress=False)
    assert "match none of them" in report.detectors[0].reason
    assert report.verdict == "no evidence" and report.trusted_detector is None


def test_audits_a_torch_export_program(user, tmp_path):
    import eis
    from eis.usermodel import load_model

    with np.load(user.dir / "clean.npz") as f:
        x, y = torch.tensor(f["x"][:64]), torch.tensor(f["y"][:64])
    batch = {"x": {0: torch.export.Dim("batch")}}  # exported with a dynamic batch size, as audits need
    torch.export.save(torch.export.export(user.troj, (x,), dynamic_shapes=batch), str(tmp_path / "m.pt2"))
    loaded = load_model(tmp_path / "m.pt2", device="cpu")
    report = eis.audit(loaded, x, y, detectors=["random_scorer"], synthesis=None, progress=False)
    assert report.detectors[0].status == "ok" and report.num_classes == 10
