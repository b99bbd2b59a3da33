"""Runs killed with SIGKILL at random (seeded) moments: the next run resumes and completes, and nothing
partial is ever read back as complete.

Each subject (a zoo build of a tiny suite, a bench with fake tools, ``eis audit`` and ``eis repair`` on a
small user model) is started as a real process and killed several times, at delays drawn from a seeded
generator and spread over its run; after every kill the state it leaves is checked (artifacts open or are
absent, the store opens and passes SQLite's integrity check, an audit or repair output under its final
name is whole, the user's model file is untouched), then one last run must finish the work. The processes
are forked from a zygote that imported eis once (tests/kill_harness.py), which keeps this file within
about a minute and a half. Two more tests kill a process in the middle of writing a large output file.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import bench_fakes
import pytest
import torch
from kill_harness import Zygote, wait_for
from safetensors.torch import load_file
from tiny_user_model import cli_env, make_user_model, tiny_suite, write_images
from typer.testing import CliRunner

from eis.results.store import STATUSES, Store

SEED = 1234
KILLS = 4
TINY_SUITE = tiny_suite("k")


def spread(k: int, lo: float, hi: float, seed: int) -> list[float]:
    """``k`` seeded random delays, one in each of ``k`` equal slices of [lo, hi]."""
    rng = random.Random(seed)
    step = (hi - lo) / k
    return [round(lo + i * step + rng.uniform(0, step), 3) for i in range(k)]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(cli_env(tmp_path_factory.mktemp("zygote-home"), EIS_PLUGINS="bench_fakes"))
    yield z
    z.close()


def kill_cycles(zygote, argv, env, cwd: Path, marker: str | None, delays: list[float], check) -> int:
    """Start ``argv`` once per delay, kill it ``delay`` seconds after ``marker`` shows in its output (or
    after its start), and ``check()`` what it left; returns how many runs were killed before they ended."""
    killed = 0
    for i, delay in enumerate(delays):
        log = cwd / f"kill-{i}.log"
        pid = zygote.run(argv, env, cwd, log)
        status = wait_for(log, marker, zygote, pid) if marker else None
        if status is None:
            status = zygote.wait(pid, delay)
        if status is None:
            status = zygote.kill(pid)
            killed += status == -9  # (0: it ended just before the signal)
        assert status in (0, -9), log.read_text()
        check()
    return killed


def finish(zygote, argv, env, cwd: Path) -> str:
    log = cwd / "final.log"
    pid = zygote.run(argv, env, cwd, log)
    status = zygote.wait(pid, 300)
    assert status == 0, log.read_text()
    return log.read_text()


# -- the zoo ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_zoo_builds_leave_only_whole_artifacts_and_the_next_build_resumes(zygote, tmp_path) -> None:
    import eis.zoo
    from eis.zoo import artifact
    from eis.zoo.build import open_case

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    home = tmp_path / "home"
    env = cli_env(home)
    zoo = home / "zoo"

    def whole() -> dict[str, int]:
        """The artifacts under their final names: every one must be whole (by its hashes) and open."""
        out = {}
        for root in zoo.iterdir() if zoo.exists() else []:
            if not root.name.startswith("."):  # .tmp-* folders are a killed build's work in progress
                artifact.read_manifest(root)
                open_case(root).model()
                out[root.name] = (root / "manifest.json").stat().st_mtime_ns
        return out

    argv = ["zoo", "build", suite, "--workers", "0", "--device", "cpu"]
    killed = kill_cycles(zygote, argv, env, tmp_path, "zoo ", spread(KILLS, 1.0, 4.0, SEED), whole)
    before = whole()
    print(f"\nzoo: {killed} of {KILLS} builds killed; {len(before)} of 3 artifacts whole before the last")
    finish(zygote, argv, env, tmp_path)
    after = whole()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EIS_HOME", str(home))
        assert set(after) == {s.case_id for s in eis.zoo.suite_cases(str(suite))}
    assert all(after[k] == v for k, v in before.items())  # resumed: what was built is not built again
    assert killed >= KILLS // 2, killed


# -- the benchmark ---------------------------------------------------------------------------------------
def _comparable(records: list[dict]) -> dict[str, dict]:
    keep = ("key", "case_id", "tool", "track", "status", "error", "scores", "items", "seed", "settings")
    return {r["key"]: {k: r[k] for k in keep} for r in records}


@pytest.mark.slow
def test_killed_benches_leave_a_sound_store_and_the_next_bench_completes(
    zygote, tmp_path, monkeypatch
) -> None:
    from eis.runner import run_benchmark

    store = tmp_path / "r.sqlite"
    env = cli_env(tmp_path / "home", EIS_PLUGINS="bench_fakes", FAKE_SUITE_N="9", FAKE_SLOW_DELAY="0.12")
    tools, tracks = ["fake-slow", "fake-grad"], ["fake-localize", "fake-spread"]
    argv = ["bench", "fake-suite", "--store", store, "--tracks", ",".join(tracks), "--tools", ",".join(tools),
            "--workers", "0"]  # fmt: skip
    counts = [0]

    def sound() -> None:
        if not store.exists():
            return
        with Store(store) as st:
            assert st.integrity_check() == "ok"
            records = st.records()  # every JSON column decodes
        assert all(r["status"] in STATUSES for r in records)
        assert len(records) >= counts[-1]  # nothing finished is lost
        counts.append(len(records))

    killed = kill_cycles(zygote, argv, env, tmp_path, "bench: 0/", spread(KILLS, 0.3, 1.5, SEED + 1), sound)
    print(f"\nbench: {killed} of {KILLS} runs killed; cells in the store after each: {counts[1:]}")
    out = finish(zygote, argv, env, tmp_path)
    total = 6 * 4 + 9 * 4  # localize: 6 flawed cases x (2 tools + 2 controls); spread: 9 cases x 4
    assert f"{total} cells: {total - counts[-1]} run now (0 failed), {counts[-1]} already in" in out, out
    monkeypatch.setenv("FAKE_SLOW_DELAY", "0.0")
    ref = tmp_path / "ref.sqlite"
    run_benchmark(bench_fakes.make_cases(9), tools=tools, tracks=tracks, workers=0, store=ref)
    with Store(store) as st, Store(ref) as rs:
        assert st.integrity_check() == "ok"
        assert _comparable(st.records()) == _comparable(rs.records())  # each cell once, as if never killed
    assert killed >= KILLS // 2, killed


# -- audit and repair on a user's model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    root = make_user_model(tmp_path_factory.mktemp("user"))
    write_images(root / "screen", [f"img_{i:02d}.png" for i in range(12)])
    return root


def whole_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None  # a partial file fails to parse


def whole_html(path: Path) -> None:
    if path.exists():
        assert path.read_text().rstrip().endswith("</html>"), path


@pytest.mark.slow
def test_killed_audits_never_leave_a_partial_report(zygote, user, tmp_path) -> None:
    out = tmp_path / "audit"
    argv = ["audit", user / "model.safetensors", "--arch", f"{user / 'nets.py'}:tiny", "--data",
            user / "clean.npz", "--inputs", user / "screen", "--out", out, "--nc-steps", "20",
            "--detectors", "neural_cleanse,strip,specificity"]  # fmt: skip
    env = cli_env(tmp_path / "home")

    def check() -> None:
        report = whole_json(out / "audit.json")
        assert report is None or report["verdict"] in ("suspicious", "no evidence")
        whole_html(out / "audit.html")

    marker = "audit: detectors"
    killed = kill_cycles(zygote, argv, env, tmp_path, marker, spread(KILLS, 0.0, 3.0, SEED + 2), check)
    finish(zygote, argv, env, tmp_path)
    check()
    assert whole_json(out / "audit.json") is not None and (out / "audit.html").exists()
    assert killed >= KILLS // 2, killed


@pytest.mark.slow
def test_killed_repairs_never_touch_the_model_nor_leave_partial_outputs(zygote, user, tmp_path) -> None:
    from eis.usermodel import load_factory

    model = user / "model.safetensors"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    out = tmp_path / "repair"
    argv = ["repair", model, "--arch", f"{user / 'nets.py'}:tiny", "--data", user / "clean.npz", "--out", out,
            "--nc-steps", "20", "--method", "finetune", "--settings", '{"epochs": 3}']  # fmt: skip
    env = cli_env(tmp_path / "home")

    def check() -> None:
        assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
        weights = out / "repaired.safetensors"
        if weights.exists():  # whole: it loads, strictly, into the user's factory
            load_factory(f"{user / 'nets.py'}:tiny")().load_state_dict(load_file(str(weights)))
        report = whole_json(out / "repair.json")
        assert report is None or (report["method"] == "finetune" and weights.exists())
        whole_html(out / "repair.html")

    killed = kill_cycles(zygote, argv, env, tmp_path, None, spread(KILLS, 0.2, 3.0, SEED + 3), check)
    finish(zygote, argv, env, tmp_path)
    check()
    assert (out / "repaired.safetensors").exists() and whole_json(out / "repair.json") is not None
    assert killed >= KILLS // 2, killed


def test_repair_refuses_an_out_folder_that_would_overwrite_the_model(user, tmp_path) -> None:
    from eis.cli import app

    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "repaired.safetensors"  # e.g. repairing the output of an earlier repair, in place
    model.write_bytes((user / "model.safetensors").read_bytes())
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    args = ["repair", str(model), "--arch", f"{user / 'nets.py'}:tiny", "--data", str(user / "clean.npz"),
            "--out", str(folder), "--nc-steps", "5"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "would overwrite the model" in lines[0] and "choose another --out" in lines[0]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in folder.iterdir()) == ["repaired.safetensors"]


# -- killed in the middle of writing a large output -----------------------------------------------------
AUDIT_WRITE = """
import eis.audit.page
from eis.audit.report import AuditReport
eis.audit.page.render_page = lambda report: "<!doctype html>" + "x" * 150_000_000 + "</html>\\n"
AuditReport("no evidence", None, "rule", None, [], [], 10, (1, 8, 8), {}, 0.0).write("out")
"""
REPAIR_WEIGHTS = """
import pathlib, torch
from eis.cli.repair import write_weights
write_weights(torch.nn.Linear(2048, 8192), pathlib.Path("out/repaired.safetensors"))
"""
REPAIR_REPORT = """
from eis.repair import RepairReport
RepairReport("finetune", {}, 1, 1, 0.5, 0.5, details={"blob": "x" * 60_000_000}).write("out")
"""


def _kill_mid_write(zygote, code: str, cwd: Path) -> list[Path]:
    """Run ``code`` and SIGKILL it as soon as some file under ``cwd/out`` holds over 1 MB; the final
    files it leaves."""
    out = cwd / "out"
    out.mkdir()
    pid = zygote.run_code(code, cli_env(cwd / "home"), cwd, cwd / "log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 1_000_000 for p in out.iterdir() if p.is_file()):
            zygote.kill(pid)
            break
        status = zygote.wait(pid, 0.002)
        assert status is None, (cwd / "log").read_text()  # killed before it could finish
    else:
        raise AssertionError("no output file grew past 1 MB")
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def test_an_audit_killed_mid_write_leaves_no_partial_file(zygote, tmp_path) -> None:
    for path in _kill_mid_write(zygote, AUDIT_WRITE, tmp_path):
        if path.name == "audit.json":
            assert whole_json(path)["verdict"] == "no evidence"
        else:
            assert path.name == "audit.html"
            whole_html(path)


@pytest.mark.parametrize("code", [REPAIR_WEIGHTS, REPAIR_REPORT], ids=["weights", "report"])
def test_a_repair_killed_mid_write_leaves_no_partial_file(zygote, code, tmp_path) -> None:
    for path in _kill_mid_write(zygote, code, tmp_path):
        if path.name == "repaired.safetensors":
            assert load_file(str(path))["weight"].shape == torch.Size([8192, 2048])
        elif path.name == "repair.json":
            assert len(whole_json(path)["details"]["blob"]) == 60_000_000
        else:
            assert path.name == "repair.html"
            whole_html(path)
