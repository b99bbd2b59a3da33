"""``eis bench`` / ``eis report`` / ``eis results`` from the command line, bad input and faults included."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import bench_fakes  # noqa: F401  (registers the fake suite, tools and tracks in this process)
import pytest
from typer.testing import CliRunner

from eis.cli import app
from eis.results import load
from eis.results.store import SCHEMA_VERSION, Store

TESTS = Path(__file__).resolve().parent
runner = CliRunner()
FAST = ["--tracks", "fake-localize,fake-spread", "--tools", "fake-oracle,fake-raise", "--workers", "0"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "no-such-suite"], "unknown suite 'no-such-suite'; valid: "),
        (["bench", "fake-suite", "--tracks", "nope"], "unknown track 'nope'; valid: "),
        (
            ["bench", "fake-suite", "--tracks", "fake-localize", "--tools", "nope"],
            "unknown tool 'nope'; valid: ",
        ),
        (
            ["results", "export", "--format", "xlsx"],
            "unknown export format 'xlsx'; valid: csv, json, parquet",
        ),
    ],
)
def test_bad_names_exit_2_with_valid_names(args: list[str], message: str, tmp_path: Path) -> None:
    res = invoke(*args, "--store", tmp_path / "r.sqlite")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    valid = {"suite": "fake-suite", "track": "fake-localize", "tool": "fake-oracle", "format": "csv"}
    assert any(v in lines[0] for v in valid.values())


def test_bench_report_export(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    res = invoke("bench", "fake-suite", *FAST, "--store", store)
    assert res.exit_code == 0, res.output
    assert "20 cells: 20 run now (5 failed)" in res.output and "boom from fake-raise" in res.output
    again = invoke("bench", "fake-suite", *FAST, "--store", store)
    assert again.exit_code == 0 and "0 run now (0 failed), 20 already in" in again.output
    rep = invoke("report", "--store", store, "--out", tmp_path / "rep")
    assert rep.exit_code == 0, rep.output
    assert (
        "fake-oracle" in rep.output and "(control)" in rep.output and (tmp_path / "rep/index.html").is_file()
    )
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / f"x.{fmt}"
        res = invoke("results", "export", "--format", fmt, "--out", out, "--store", store)
        assert res.exit_code == 0 and out.stat().st_size > 0, res.output
    info = invoke("results", "info", "--store", store)
    assert info.exit_code == 0 and "integrity ok): 20 cells" in info.output


def test_store_that_is_not_eis_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "thesis.sqlite"
    path.write_bytes(b"chapter one\n" * 100)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for args in (["bench", "fake-suite", *FAST], ["report"], ["results", "export"]):
        res = invoke(*args, "--store", path)
        assert res.exit_code == 2 and "not an eis results store" in res.output, res.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_newer_schema_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 5),))
    con.commit()
    con.close()
    res = invoke("bench", "fake-suite", *FAST, "--store", path)
    assert res.exit_code == 2 and "newer than this eis supports" in res.output, res.output


def _bench_process(store: Path, *extra: str, n_cases: int = 6) -> subprocess.Popen:
    """A real ``eis bench`` process on the fake suite, with the fakes loaded through EIS_PLUGINS."""
    env = dict(os.environ)
    env.update(
        EIS_PLUGINS="bench_fakes",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        EIS_HOME=str(store.parent / "home"),
        FAKE_SUITE_N=str(n_cases),
        FAKE_SLOW_DELAY="0.25",
    )
    cmd = [
        sys.executable,
        "-c",
        "from eis.cli import app; app()",
        "bench",
        "fake-suite",
        "--store",
        str(store),
    ]
    cmd += ["--tracks", "fake-localize,fake-spread", "--tools", "fake-slow", *extra]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _count(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # the store's tables are not created yet
        return 0


def _check_complete(store: Path, total: int) -> None:
    with Store(store) as st:
        assert st.integrity_check() == "ok"
        assert st.count() == total
    df = load(store)
    assert df["key"].is_unique and len(df) == total and (df["status"] == "ok").all()
    assert df.groupby(["track", "case_id", "tool"]).size().eq(1).all()  # every cell exactly once


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_completes_each_cell_once(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    total = 4 * 3 + 6 * 3  # localize: 4 flawed cases x 3 tools; spread: 6 cases x 3 tools
    proc = _bench_process(store, "--workers", "0")
    while _count(store) < 4 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the bench process and its workers, mid-run
    proc.wait()
    done = _count(store)
    assert proc.returncode == -signal.SIGKILL and 4 <= done < total, proc.stdout.read().decode()
    with Store(store) as st:
        assert st.integrity_check() == "ok"
    resumed = _bench_process(store, "--workers", "0")
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, out
    assert f"{total} cells: {total - done} run now (0 failed), {done} already in" in out, out
    _check_complete(store, total)


@pytest.mark.slow
def test_two_bench_processes_on_one_store_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    total = 4 * 3 + 6 * 3
    procs = [_bench_process(store, "--workers", "0") for _ in range(2)]
    outs = [p.communicate()[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    _check_complete(store, total)
