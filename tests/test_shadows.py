"""Shadow calibration on an architecture eis never built (examples/audit_your_model.py's StridedNet on 12x12
digits): records with n and CIs, learned detectors that become applicable, a verdict that follows the
shadow records, the user's training function, the cache, bad input, and the Ray path.

Fast settings: 3 clean + 3 flawed shadows, 10 epochs, patch triggers at a 10-20% poison rate (which this
architecture learns reliably), Neural Cleanse at 40 steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import eis.audit
from eis.cli import app
from eis.errors import EisError
from eis.health import check_model
from eis.shadows import ShadowRecipe, UserArch, calibrate_shadows, p_value
from eis.usermodel import save_weights
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[1]
FACTORY = f"{ROOT / 'examples' / 'audit_your_model.py'}:make"
RECIPE = ShadowRecipe(shadows=3, epochs=10, lr=4e-3, kinds=("patch",), poison_rate=(0.1, 0.2))
SETTINGS = {"neural_cleanse": {"steps": 40}}


def example():
    sys.path.insert(0, str(ROOT / "examples"))
    import audit_your_model

    return audit_your_model


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's trojaned model, their training data and held-out examples, as files and tensors."""
    ex = example()
    d = tmp_path_factory.mktemp("shadow-user")
    x, y = ex.digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1300], perm[1300:1500]
    model = ex.train(x[tr], y[tr], poison=0.2, epochs=8)
    save_weights(model, d / "model.safetensors")
    np.savez(d / "train.npz", x=x[tr].numpy(), y=y[tr].numpy())
    np.savez(d / "clean.npz", x=x[te].numpy(), y=y[te].numpy())
    return dataclasses.make_dataclass("User", ["dir", "model", "train_x", "train_y", "x", "y"])(
        d, model, x[tr], y[tr], x[te], y[te]
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An EIS_HOME of this module's own (the shadows and their cache live there); the architectures and
    data sets the shadows register are forgotten afterwards (other tests list the registries)."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("shadow-home")
    mp.setenv("EIS_HOME", str(path))
    mp.setattr(ARCHS, "_items", dict(ARCHS._items))
    mp.setattr(DATASETS, "_items", dict(DATASETS._items))
    yield path
    mp.undo()


def calibrate(user, **kw):
    acc = check_model(user.model, user.x, user.y).accuracy
    args = {"recipe": RECIPE, "settings": SETTINGS, "workers": 2, **kw}
    return calibrate_shadows(
        UserArch.of(FACTORY), user.train_x, user.train_y, user.x, user.y, num_classes=10, user_accuracy=acc,
        **args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(user, home):
    return calibrate(user)


def test_records_have_n_and_cis_measured_on_the_shadows(run):
    table = run.table
    sh = table["shadows"]
    assert table["made_by"]["source"] == "shadows" and not run.cached
    assert sh["n_clean"] == 3 and 2 <= sh["n_flawed"] <= 3 and sh["key"] == run.key
    assert sh["seconds"]["build"] > 0 and sh["recipe"]["shadows"] == 3
    n = sh["n_clean"] + sh["n_flawed"]
    for name in ("neural_cleanse", "specificity", "mntd", "weight_stats", "random_scorer"):
        e = table["detectors"][name]
        assert e["n"] == n and e["n_clean"] == sh["n_clean"], name
        for key in ("tpr", "fpr", "auroc"):
            lo, hi = e[f"{key}_ci"]
            assert 0 <= lo <= e[key] <= hi <= 1, (name, key)
        assert len(e["clean_scores"]) == sh["n_clean"]
        assert sum(b["n"] for b in e["strength_curve"]) == sh["n_flawed"]


def test_learned_detectors_apply_and_the_verdict_follows_the_shadow_records(run, user):
    rep = eis.audit.audit(user.model, user.x, user.y, calibration=run.table, settings=SETTINGS,
                          synthesis=None, progress=False)  # fmt: skip
    for name in ("mntd", "weight_stats"):
        assert rep.detector(name).status == "ok", rep.detector(name).reason
    table = run.table["detectors"]
    model_level = [d for d in rep.detectors if d.score is not None]
    assert all(d.track_record["source"] == "shadows" and "zoo" in d.track_record for d in model_level)
    for d in model_level:
        assert d.p_value == p_value(d.score, table[d.name]["clean_scores"])
    best = max(
        model_level, key=lambda d: (table[d.name]["tpr"] - table[d.name]["fpr"], -table[d.name]["fpr"])
    )
    if table[best.name]["tpr"] - table[best.name]["fpr"] > 0:
        assert rep.trusted_detector == best.name
        assert rep.suspicious == best.flagged
    js = rep.to_json()
    assert js["calibration"]["source"] == "shadows" and js["calibration"]["shadows"]["key"] == run.key


def test_the_cache_is_reused_by_a_second_calibration(run, user):
    again = calibrate(user)
    assert again.cached and again.key == run.key and again.table == run.table


def test_cells_that_failed_are_run_again_by_the_next_calibration(run, user, home, tmp_path, monkeypatch):
    """A calibration cut short after its detect cells failed (here: marked failed, the table not yet
    written) runs those cells again next time instead of keeping the failures."""
    import shutil
    import sqlite3

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    monkeypatch.setenv("EIS_HOME", str(copy))
    root = copy / "shadows" / run.key
    (root / "calibration.json").unlink()
    with sqlite3.connect(root / "results.sqlite") as db:
        db.execute("UPDATE cells SET status = 'failed', error = 'worker killed' WHERE tool = 'specificity'")
    again = calibrate(user)
    assert not again.cached
    with sqlite3.connect(root / "results.sqlite") as db:
        assert db.execute("SELECT count(*) FROM cells WHERE status = 'failed'").fetchone()[0] == 0
    assert again.table["detectors"]["specificity"] == run.table["detectors"]["specificity"]


def test_the_cli_audits_with_shadows_and_a_saved_table_is_reused(run, user, tmp_path):
    files = ["--arch", FACTORY, "--data", str(user.dir / "clean.npz")]
    shadows = ["--train-data", str(user.dir / "train.npz"), "--shadows", "3", "--recipe", "epochs=10",
               "--recipe", "lr=0.004", "--recipe", "kinds=patch", "--recipe", "poison_rate=0.1,0.2",
               "--nc-steps", "40", "--workers", "2"]  # fmt: skip
    model = str(user.dir / "model.safetensors")
    res = CliRunner().invoke(app, ["audit", model, *files, *shadows, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert f"shadow calibration {run.key}" in res.output and "reused from the cache" in res.output
    js = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert js["calibration"]["source"] == "shadows"
    assert {d["name"]: d["status"] for d in js["detectors"]}["mntd"] == "ok"
    assert "Shadow calibration" in (tmp_path / "a" / "audit.html").read_text()
    table = tmp_path / "shadows.json"
    res = CliRunner().invoke(app, ["calibrate", "--model", model, *files, *shadows, "--out", str(table)])
    assert res.exit_code == 0 and "reused from the cache" in res.output, res.output
    res = CliRunner().invoke(app, ["audit", model, *files, "--calibration", str(table), "--nc-steps", "40",
                                   "--out", str(tmp_path / "b")])  # fmt: skip
    js = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert res.exit_code == 0 and js["calibration"]["shadows"]["key"] == run.key
    assert {d["name"]: d["status"] for d in js["detectors"]}["mntd"] == "ok"


def test_bad_input_is_one_line_and_the_audit_goes_on_with_the_zoo_records(user, home, tmp_path):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((200, 3, 12, 12), np.float32), y=np.zeros(200, np.int64))
    np.savez(tmp_path / "few.npz", x=user.train_x[:30].numpy(), y=user.train_y[:30].numpy())
    base = ["audit", str(user.dir / "model.safetensors"), "--arch", FACTORY, "--data",
            str(user.dir / "clean.npz"), "--detectors", "specificity,random_scorer",
            "--shadows", "2"]  # fmt: skip
    train = ["--train-data", str(user.dir / "train.npz")]
    cases = [
        (["--train-data", str(tmp_path / "rgb.npz")], "training data must be images shaped (N, 1, 12, 12)"),
        (["--train-data", str(tmp_path / "few.npz")], "shadows need at least 100"),
        ([*train, "--recipe", "optimizer=lion"], "unknown shadow optimizer"),
        ([*train, "--recipe", "nope=1"], "must read KEY=VALUE"),
    ]
    for extra, message in cases:
        out = tmp_path / f"o{len(extra)}{message[:5]}"
        res = CliRunner().invoke(app, [*base, *extra, "--out", str(out)], env={"COLUMNS": "400"})
        assert res.exit_code == 2, (extra, res.output, res.stderr)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in res.stderr, res.stderr
        js = json.loads((out / "audit.json").read_text())  # the audit still ran, on the zoo's records
        assert js["calibration"]["source"] == "zoo"
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "give --train-data" in res.output


def test_a_recipe_whose_shadows_miss_the_bar_is_refused(user, home):
    with pytest.raises(EisError, match="too few for a record"):
        calibrate(user, recipe=dataclasses.replace(RECIPE, shadows=2, epochs=1), detectors=["random_scorer"])


TRAINER = """
import hashlib, json
import torch
import torch.nn.functional as F

def fit(model, dataset):
    x, y = dataset.tensors
    with open({log!r}, "a") as f:
        f.write(json.dumps({{"x": hashlib.sha256(x.numpy().tobytes()).hexdigest(), "y": y.tolist()}}) + "\\n")
    if {fail}:
        raise RuntimeError("out of coffee")
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
"""


def test_the_users_training_function_gets_poisoned_data_for_flawed_shadows_only(
    user, home, tmp_path, monkeypatch
):
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    log = tmp_path / "calls.jsonl"
    (tmp_path / "trainer.py").write_text(TRAINER.format(log=str(log), fail=False))
    recipe = dataclasses.replace(RECIPE, shadows=2, trainer=f"{tmp_path / 'trainer.py'}:fit")
    run = calibrate(user, recipe=recipe, detectors=["specificity", "random_scorer"], workers=0)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    clean_hash = hashlib.sha256(user.train_x.numpy().tobytes()).hexdigest()
    clean = [c for c in calls if c["x"] == clean_hash and c["y"] == user.train_y.tolist()]
    poisoned = [c for c in calls if c["x"] != clean_hash]
    assert len(clean) >= 2 and len(poisoned) >= 2 and len(clean) + len(poisoned) == len(calls)
    for c in poisoned:  # poisoned: some labels moved to one target class
        moved = np.array(c["y"]) != user.train_y.numpy()
        assert moved.any() and len(set(np.array(c["y"])[moved])) == 1
    assert run.table["shadows"]["recipe"]["trainer"].endswith("trainer.py:fit")
    (tmp_path / "failing.py").write_text(TRAINER.format(log=str(log), fail=True))
    recipe = dataclasses.replace(recipe, trainer=f"{tmp_path / 'failing.py'}:fit")
    with pytest.raises(EisError, match="raised RuntimeError: out of coffee"):
        calibrate(user, recipe=recipe, detectors=["random_scorer"], workers=0)


@pytest.mark.slow
def test_ray_on_a_local_cluster_gives_the_records_of_the_pool(run, user, home, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        again = calibrate(user, backend="ray")
    finally:
        ray.shutdown()
    assert not again.cached and again.key == run.key
    for name, e in run.table["detectors"].items():
        other = again.table["detectors"][name]
        for key in ("tpr", "fpr", "auroc", "n", "clean_scores", "threshold"):
            assert other.get(key) == e.get(key), (name, key)


def test_cached_shadows_are_rechecked_against_todays_bar():
    from types import SimpleNamespace

    from eis.shadows.calibrate import _meeting_bars
    from eis.zoo.spec import CaseSpec

    spec = CaseSpec("s", "digits", "cnn", {"kind": "clean"}, bars={"clean_accuracy": 0.9})
    truth = SimpleNamespace(measured={"clean_accuracy": 0.85})
    case = SimpleNamespace(id=spec.case_id, name="s", truth=lambda: truth)
    keep, misses = _meeting_bars([case], {spec.case_id: spec})
    assert keep == [] and "(cached) misses its clean_accuracy bar: 0.850 < 0.900" in misses[0]
    truth.measured["clean_accuracy"] = 0.95
    assert _meeting_bars([case], {spec.case_id: spec}) == ([case], [])
