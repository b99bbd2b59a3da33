"""Concurrent use of one EIS_HOME and one results store by real ``eis`` processes, and stores written by
other eis schemas.

- Three ``eis bench`` processes at once (two of the same suite, one of another) on one new store: every
  cell is in the store exactly once, with the same record as a one-at-a-time run.
- ``eis zoo build`` racing ``eis bench`` of the same small suite: every case has exactly one intact
  artifact, bit-identical to a build made alone, and the bench's cells are complete.
- A store of a newer schema is refused in one line, an older one too (no migration exists yet), and
  neither file is touched.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import bench_fakes
import concurrency_fakes
import pytest
from tiny_user_model import cli, cli_env, tiny_suite
from typer.testing import CliRunner

from eis.cli import app
from eis.results.store import SCHEMA_VERSION, Store

TRACKS = ["fake-localize", "fake-spread"]
TOOLS = ["fake-slow", "fake-grad", "fake-raise"]
N_A, N_B = 6, 4  # cases of fake-suite and fake-suite-b
VOLATILE = ("runtime_s", "peak_mem_mb", "rss_start_mb", "peak_gpu_mb", "finished_at", "host", "versions")

TINY_SUITE = tiny_suite("tiny")


def fake_env(home: Path) -> dict[str, str]:
    return cli_env(
        home,
        EIS_PLUGINS="bench_fakes,concurrency_fakes",
        FAKE_SUITE_N=str(N_A),
        FAKE_SUITE_B_N=str(N_B),
        FAKE_SLOW_DELAY="0.05",
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def comparable(records: list[dict]) -> dict[str, dict]:
    """Records by key, without what differs from run to run (timings, host, a traceback's text)."""
    out = {}
    for rec in records:
        rec = {k: v for k, v in rec.items() if k not in VOLATILE}
        rec["extras"] = {k: v for k, v in rec["extras"].items() if k != "traceback"}
        out[rec["key"]] = rec
    return out


@pytest.mark.slow
def test_three_benches_at_once_on_one_store_each_cell_once_as_if_alone(tmp_path, monkeypatch) -> None:
    from eis.runner import run_benchmark

    monkeypatch.setenv("FAKE_SLOW_DELAY", "0.05")
    ref = tmp_path / "ref.sqlite"
    for cases in (bench_fakes.make_cases(N_A), concurrency_fakes.suite_b()):
        run_benchmark(cases, tools=TOOLS, tracks=TRACKS, workers=0, store=ref)
    with Store(ref) as st:
        expected = comparable(st.records())
    assert len(expected) == (4 + 3) * 5 + (N_A + N_B) * 5  # flawed cases x 5 tools (2 controls), all x 5

    store, env = tmp_path / "shared.sqlite", fake_env(tmp_path / "home")  # a new store: created at once
    common = [
        "--store",
        str(store),
        "--tracks",
        ",".join(TRACKS),
        "--tools",
        ",".join(TOOLS),
        "--workers",
        "0",
    ]
    procs = [start(["bench", suite, *common], env) for suite in ("fake-suite", "fake-suite", "fake-suite-b")]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    with Store(store) as st:
        assert st.integrity_check() == "ok" and st.count() == len(expected)
        got = comparable(st.records())
    assert got.keys() == expected.keys()
    for key, rec in expected.items():
        assert got[key] == rec, key
    # the two runs of one suite split its cells: together they ran each at least once, none was lost
    ran = [int(o.split(" run now")[0].rsplit(": ", 1)[-1]) for o in outs[:2]]
    assert sum(ran) >= 4 * 5 + N_A * 5, outs


@pytest.mark.slow
def test_zoo_build_racing_a_bench_of_the_same_suite(tmp_path, monkeypatch) -> None:
    import eis.zoo
    from eis.results import load
    from eis.zoo import artifact
    from eis.zoo.build import open_case

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    home, store = tmp_path / "home", tmp_path / "r.sqlite"
    env = cli_env(home)
    build = start(["zoo", "build", str(suite), "--workers", "0", "--device", "cpu"], env)
    bench = start(["bench", str(suite), "--workers", "0", "--device", "cpu", "--tracks", "localize",
                   "--tools", "saliency", "--store", str(store)], env)  # fmt: skip
    outs = [p.communicate(timeout=300)[0].decode() for p in (build, bench)]
    assert [build.returncode, bench.returncode] == [0, 0], outs

    monkeypatch.setenv("EIS_HOME", str(home))
    ids = {spec.case_id for spec in eis.zoo.suite_cases(str(suite))}
    zoo = artifact.zoo_dir()
    assert {p.name for p in zoo.iterdir()} == ids  # one folder per case, no temporary folder left
    for case_id in ids:
        artifact.read_manifest(zoo / case_id)  # every file matches its hash
        open_case(zoo / case_id).model()

    monkeypatch.setenv("EIS_HOME", str(tmp_path / "alone"))  # the same suite built alone, in this process
    alone = {c.id: c.root for c in eis.zoo.build_suite(str(suite), workers=0, device="cpu")}
    assert alone.keys() == ids
    for case_id, root in alone.items():
        for name in artifact.FILES:
            assert (zoo / case_id / name).read_bytes() == (root / name).read_bytes(), (case_id, name)

    df = load(store)
    assert len(df) == 4 and df["key"].is_unique and (df["status"] == "ok").all()  # saliency + 3 controls


# -- stores of other schemas and versions ---------------------------------------------------------------
FAST = ["--tracks", "fake-localize", "--tools", "fake-oracle", "--workers", "0"]


def _store_with_schema(path: Path, version: int) -> str:
    with Store(path) as st:
        st.put({"key": "k", "case_id": "c", "tool": "t", "track": "fake-localize", "status": "ok"})
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    con.commit()
    con.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (SCHEMA_VERSION + 1, f"has schema version {SCHEMA_VERSION + 1}, newer than this eis supports"),
        (
            SCHEMA_VERSION - 1,
            f"has old schema version {SCHEMA_VERSION - 1} (this eis writes {SCHEMA_VERSION})",
        ),
    ],
)
def test_a_store_of_another_schema_is_refused_in_one_line_and_left_alone(version, message, tmp_path) -> None:
    path = tmp_path / "r.sqlite"
    before = _store_with_schema(path, version)
    for args in (["results", "info"], ["results", "export", "--out", str(tmp_path / "x.csv")], ["report"],
                 ["bench", "fake-suite", *FAST]):  # fmt: skip
        res = CliRunner().invoke(app, [*args, "--store", str(path)], env={"COLUMNS": "300"})
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: results store ") and message in lines[0], lines
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (tmp_path / "x.csv").exists()


def test_a_store_written_by_another_eis_version_of_this_schema_is_read(tmp_path) -> None:
    from eis.results import load

    path = tmp_path / "r.sqlite"
    with Store(path) as st:
        st.put({"key": "k", "case_id": "c", "case_name": "n", "tool": "fake-oracle", "status": "ok",
                "track": "fake-localize", "versions": {"eis": "0.0.1"}, "scores": {"hit": 0.5}})  # fmt: skip
    df = load(path)
    assert len(df) == 1 and df["versions"].iloc[0]["eis"] == "0.0.1"
    res = CliRunner().invoke(app, ["results", "info", "--store", str(path)])
    assert res.exit_code == 0 and f"(schema {SCHEMA_VERSION}, integrity ok): 1 cells" in res.output, (
        res.output
    )
