"""The runner: cell expansion and keys, failure capture, caching, time budget, pool == in process."""

from __future__ import annotations

from pathlib import Path

import bench_fakes as bf
import pytest

from eis.errors import EisError
from eis.results import load, open_store
from eis.runner import cell_key, cell_seed, expand, run_benchmark

TRACK = ["fake-localize"]


def test_cell_key_depends_on_every_part() -> None:
    base = ("case", "tool", '{"a":1}', "track", "1")
    keys = {cell_key(*base)}
    for i, other in enumerate(["case2", "tool2", '{"a":2}', "track2", "2"]):
        parts = list(base)
        parts[i] = other
        keys.add(cell_key(*parts))
    assert len(keys) == 6 and cell_key(*base) == cell_key(*base)


def test_expand_adds_controls_and_respects_applies_to() -> None:
    cases = bf.make_cases(3)  # patch, blend, clean: fake-localize skips the clean one
    cells = expand(cases, ["fake-oracle"], TRACK)
    assert sorted({c.tool for c in cells}) == ["fake-blank", "fake-oracle", "fake-random"]
    assert sorted({c.case.name for c in cells}) == ["fake-0", "fake-1"]
    assert len(cells) == 6 and len({c.key for c in cells}) == 6
    assert all(c.control == (c.tool != "fake-oracle") for c in cells)
    # every tool on a case sees the same seed: the seed comes from case and track, not tool or order
    by_case = {}
    for c in cells:
        by_case.setdefault(c.case.id, set()).add(c.seed)
    assert all(len(s) == 1 for s in by_case.values()) and len(by_case) == 2
    assert cells[0].seed == cell_seed(cells[0].case.id, "fake-localize")
    assert expand(cases + cases, ["fake-oracle"], TRACK) == cells  # duplicates collapse
    assert {c.key for c in expand(cases, [bf.Grad(scale=2.0)], TRACK)} != {
        c.key for c in expand(cases, ["fake-grad"], TRACK)
    }


def test_expand_bad_names() -> None:
    cases = bf.make_cases(1)
    with pytest.raises(EisError, match=r"unknown tool 'nope'; valid: .*fake-oracle"):
        expand(cases, ["nope"], TRACK)
    with pytest.raises(EisError, match=r"unknown track 'nope'; valid: .*fake-localize"):
        expand(cases, None, ["nope"])


def test_failures_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    tools = ["fake-oracle", "fake-raise", "fake-nan"]
    s = run_benchmark(bf.make_cases(3), tools, TRACK, workers=0, store=store)
    assert (s.total, s.ran, s.cached, s.failed) == (10, 10, 0, 4)
    df = load(store).set_index(["tool", "case_name"])
    assert df.loc[("fake-raise", "fake-0"), "status"] == "failed"
    assert df.loc[("fake-raise", "fake-0"), "error"] == "RuntimeError: boom from fake-raise"
    assert "boom from fake-raise" in df.loc[("fake-raise", "fake-0"), "extras"]["traceback"]
    assert df.loc[("fake-nan", "fake-1"), "error"] == "ValueError: tool 'fake-nan' returned a non-finite map"
    ok = df.loc[("fake-oracle", "fake-0")]
    assert ok["status"] == "ok" and ok["scores"] == {"hit": 1.0} and ok["items"] == {"hit": [1.0] * 4}
    assert ok["flaw"] == "patch" and ok["runtime_s"] > 0 and ok["peak_mem_mb"] > 10
    assert ok["versions"]["torch"].startswith("2.") and "eis" in ok["versions"] and "captum" in ok["versions"]
    assert ok["settings"] == {} and ok["seed"] == cell_seed(ok["case_id"], "fake-localize")
    with open_store(store) as st:
        assert set(st.gallery([ok["key"]])[ok["key"]]) == {"input", "mask", "map"}


def test_cache_rerun_and_retry_failed(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    args = (bf.make_cases(2), ["fake-oracle", "fake-raise"], TRACK)
    first = run_benchmark(*args, workers=0, store=store)
    assert (first.ran, first.failed) == (8, 2)
    again = run_benchmark(*args, workers=0, store=store)
    assert (again.ran, again.cached) == (0, 8)
    retry = run_benchmark(*args, workers=0, store=store, retry_failed=True)
    assert (retry.ran, retry.failed, retry.cached) == (2, 2, 6)
    forced = run_benchmark(*args, workers=0, store=store, rerun=True)
    assert (forced.ran, forced.cached) == (8, 0)
    with open_store(store) as st:
        assert st.count() == 8


def test_in_process_time_budget(tmp_path: Path) -> None:
    s = run_benchmark(
        bf.make_cases(1), [bf.Slow(delay=30.0)], TRACK, workers=0, store=tmp_path / "r.sqlite", budget_s=0.5
    )
    assert s.failed == 1 and s.failures[0]["error"] == "timed out: the cell ran past its budget of 0.5 s"
    df = load(tmp_path / "r.sqlite")
    slow = df[df.tool == "fake-slow"].iloc[0]
    assert slow["status"] == "failed" and slow["runtime_s"] < 30


@pytest.mark.slow
def test_pool_matches_in_process_and_survives_timeouts_and_crashes(tmp_path: Path) -> None:
    cases = bf.make_cases(3)
    tools = ["fake-oracle", "fake-grad"]
    run_benchmark(cases, tools, ["fake-localize", "fake-spread"], workers=0, store=tmp_path / "a.sqlite")
    pool_tools = [*tools, bf.Slow(delay=60.0), "fake-crash"]
    s = run_benchmark(
        cases, pool_tools, ["fake-localize"], workers=2, store=tmp_path / "b.sqlite", budget_s=2.5
    )
    run_benchmark(cases, tools, ["fake-spread"], workers=2, store=tmp_path / "b.sqlite")
    a, b = load(tmp_path / "a.sqlite").set_index("key"), load(tmp_path / "b.sqlite").set_index("key")
    assert s.total == 12 and s.failed == 4
    errors = b[b.status == "failed"].set_index("tool")["error"]
    assert set(errors["fake-slow"]) == {"timed out: the cell ran past its budget of 2.5 s"}
    assert all(e.startswith("the worker process died (exit code 3)") for e in errors["fake-crash"])
    common = a.index.intersection(b.index)
    assert len(common) == len(a) == 20  # every in-process cell was also run by the pool
    for col in ("status", "scores", "items", "extras", "flaw", "seed"):
        assert a.loc[common, col].tolist() == b.loc[common, col].tolist(), col
    # fake-random draws from the global RNG: equal maps prove each cell is seeded from itself, not from order
    rnd = b[(b.tool == "fake-random") & (b.track == "fake-localize")]
    assert rnd["extras"].tolist() == a.loc[rnd.index, "extras"].tolist()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_prep_the_cells_share_runs_once_before_them(tmp_path: Path, workers: int) -> None:
    log, store = tmp_path / "prep.log", tmp_path / "r.sqlite"
    settings = {"fake-prepared": {"log": str(log)}}
    tools = ["fake-oracle", "fake-grad"]
    s = run_benchmark(
        bf.make_cases(3), tools, ["fake-prepared"], workers=workers, store=store, track_settings=settings
    )
    assert s.ran == 12 and s.failed == 0  # 3 cases x (2 tools + 2 controls), one prep among them
    assert len(log.read_text().splitlines()) == 1
    assert all(e["prepared"] for e in load(store)["extras"])


def test_a_failing_prep_is_reported_and_the_cells_still_run(tmp_path: Path) -> None:
    log, store = tmp_path / "prep.log", tmp_path / "r.sqlite"
    settings = {"fake-prepared": {"log": str(log), "fail": True}}
    s = run_benchmark(
        bf.make_cases(2), ["fake-oracle"], ["fake-prepared"], workers=2, store=store, track_settings=settings
    )
    assert s.failed == 0 and s.ran == 6 and not log.exists()
    assert not any(e["prepared"] for e in load(store)["extras"])
