"""Track settings from a suite's ``[tracks.<name>]``: checked, passed to the track, part of the cell key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import bench_fakes
import pytest
from typer.testing import CliRunner

from eis.cli import app
from eis.errors import EisError
from eis.report.tables import build_report_data
from eis.results import load
from eis.runner import run_benchmark
from eis.runner.cells import cell_key, expand, track_settings
from eis.runner.plugins import load_builtins
from eis.tracks.base import TRACKS, CellResult
from eis.zoo.suites import load_suite, suite_default_tracks, suite_track_settings


class CountingTrack(bench_fakes.FakeLocalize):
    """A fake track with settings: it scores ``n_inputs`` ones, so a cell shows the settings it ran with."""

    name: ClassVar[str] = "fake-settings"
    headline: ClassVar[str] = "n"

    def __init__(self, n_inputs: int = 4, label: str = "a", n_resamples: int = 1000) -> None:
        if n_inputs < 1:
            raise EisError(f"fake-settings: n_inputs must be >= 1, got {n_inputs}")
        self.n_inputs, self.label = n_inputs, label

    def run(self, case: Any, tool: Any, *, seed: int = 0) -> CellResult:
        return CellResult(
            scores={"n": float(self.n_inputs)},
            flaw=case.truth().kind,
            items={"n": [1.0] * self.n_inputs},
            extras={"label": self.label},
        )

    def summarize(self, rows: Any) -> Any:
        import pandas as pd

        ok = rows[rows.status == "ok"]
        out = [
            {"tool": t, "control": bool(g["control"].iloc[0]), "flaw": "all", "metric": "n"}
            | {"mean": float(g["scores"].map(lambda s: s["n"]).mean()), "lo": 0.0, "hi": 0.0, "n": len(g)}
            | {"verdict": ""}
            for t, g in ok.groupby("tool")
        ]
        return pd.DataFrame(out)


load_builtins()
if CountingTrack.name not in TRACKS:
    TRACKS.register(CountingTrack.name, CountingTrack)

TOOLS = ["fake-oracle"]
SUITE = """
[[case]]
name = "digits-cnn-patch"
dataset = "digits"
arch = "cnn"
flaw = { kind = "patch", target = 0 }
"""


# -- checking --------------------------------------------------------------------------------------------
def test_settings_are_checked_and_defaults_dropped() -> None:
    assert track_settings("fake-settings", {"n_inputs": 9, "label": "a"}) == {"n_inputs": 9}
    assert track_settings("localize", {"n_inputs": 32}) == {}  # the default: the same cells as none
    assert track_settings("localize", {"n_inputs": 100, "reduction": "l2"}) == {
        "n_inputs": 100,
        "reduction": "l2",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"n_input": 100},
            "track 'localize' has no setting 'n_input'; valid: n_inputs, reduction, n_resamples",
        ),
        ({"n_inputs": "many"}, "track 'localize': setting 'n_inputs' must be an integer, got 'many'"),
        ({"n_inputs": 1.5}, "track 'localize': setting 'n_inputs' must be an integer, got 1.5"),
        ({"n_inputs": True}, "track 'localize': setting 'n_inputs' must be an integer, got True"),
        (
            {"n_inputs": 0},
            "track 'localize': setting n_inputs = 0 is not valid: localize: n_inputs must be >= 1",
        ),
        (
            {"reduction": "mean"},
            "track 'localize': setting reduction = 'mean' is not valid: localize: unknown",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(EisError) as err:
        track_settings("localize", settings)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_track_lists_the_valid_ones() -> None:
    with pytest.raises(EisError, match="unknown track 'nope'; valid: .*localize"):
        track_settings("nope", {"n_inputs": 1})


# -- cell keys -------------------------------------------------------------------------------------------
def test_default_settings_keep_the_old_key_and_others_change_it() -> None:
    fields = ["case", "tool", "{}", "localize", "2", "partner"]
    old = hashlib.sha256(json.dumps(fields).encode()).hexdigest()  # the key before tracks took settings
    assert cell_key(*fields[:5], ["partner"]) == old == cell_key(*fields[:5], ["partner"], "{}")
    k100 = cell_key(*fields[:5], ["partner"], '{"n_inputs":100}')
    k50 = cell_key(*fields[:5], ["partner"], '{"n_inputs":50}')
    assert len({old, k100, k50}) == 3


def test_expand_carries_the_settings_into_cells_and_keys() -> None:
    cases = bench_fakes.make_cases(2, ("patch",))
    plain = expand(cases, TOOLS, ["fake-settings"])
    same = expand(cases, TOOLS, ["fake-settings"], {"fake-settings": {"n_inputs": 4}})
    more = expand(cases, TOOLS, ["fake-settings"], {"fake-settings": {"n_inputs": 7}, "localize": {}})
    assert [c.key for c in plain] == [c.key for c in same]
    assert not {c.key for c in plain} & {c.key for c in more}
    assert {c.track_settings_json for c in more} == {'{"n_inputs":7}'}
    assert {c.track_settings_json for c in plain} == {"{}"}
    with pytest.raises(EisError, match="has no setting 'bogus'"):
        expand(cases, TOOLS, ["fake-settings"], {"localize": {"bogus": 1}})  # checked even if not run


# -- a run -----------------------------------------------------------------------------------------------
def test_runs_with_other_settings_are_other_cells(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    cases = bench_fakes.make_cases(2, ("patch",))
    run = dict(tools=TOOLS, tracks=["fake-settings"], workers=0, store=store)
    first = run_benchmark(cases, **run)
    assert (first.ran, first.cached) == (6, 0)  # 2 cases x (fake-oracle and the two fake controls)
    again = run_benchmark(cases, **run, track_settings={"fake-settings": {"n_inputs": 4}})
    assert (again.ran, again.cached) == (0, 6)  # the defaults, spelled out: the same cells
    other = run_benchmark(cases, **run, track_settings={"fake-settings": {"n_inputs": 7, "label": "b"}})
    assert (other.ran, other.cached) == (6, 0)
    df = load(store)
    assert len(df) == 12
    by = df["extras"].map(lambda e: json.dumps(e.get("track_settings", {}), sort_keys=True))
    assert sorted(by.value_counts().items()) == [('{"label": "b", "n_inputs": 7}', 6), ("{}", 6)]
    seven = df[by != "{}"]
    assert (seven["scores"].map(lambda s: s["n"]) == 7.0).all()
    assert (seven["extras"].map(lambda e: e["label"]) == "b").all()
    # the report shows one section per setting, each summarized by the track built with it
    data = build_report_data(store)
    titles = [s.title for s in data.sections]
    assert titles == ["fake-settings", 'fake-settings(label="b", n_inputs=7)']
    assert [float(s.leaderboard["mean"].iloc[0]) for s in data.sections] == [4.0, 7.0]


# -- suite files -----------------------------------------------------------------------------------------
def test_suite_track_settings(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SUITE + "\n[tracks.localize]\nn_inputs = 100\n\n[tracks.detect]\nn_eval = 64\n")
    assert suite_track_settings(str(path)) == {"localize": {"n_inputs": 100}, "detect": {"n_eval": 64}}
    assert [s.name for s in load_suite(str(path))] == ["digits-cnn-patch"]  # the table is not a case table
    plain = tmp_path / "plain.toml"
    plain.write_text(SUITE)
    assert suite_track_settings(str(plain)) == {}
    bad = tmp_path / "bad.toml"
    bad.write_text('tracks = "localize"\n' + SUITE)
    with pytest.raises(EisError, match=r"'tracks' must hold one table per track, like \[tracks.localize\]"):
        suite_track_settings(str(bad))
    with pytest.raises(EisError, match="must hold one table per track"):
        load_suite(str(bad))


def _bench_suite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tables: str, *args: str) -> Any:
    """``eis bench`` on SUITE plus ``tables``, with fake cases and the fake oracle, into tmp_path/r.sqlite."""
    import eis.cli.bench

    path = tmp_path / "s.toml"
    path.write_text(SUITE + tables)
    monkeypatch.setattr(
        eis.cli.bench, "_built", lambda suite, skip, **kw: bench_fakes.make_cases(1, ("patch",))
    )
    store = tmp_path / "r.sqlite"
    cli = ["bench", str(path), *args, "--tools", "fake-oracle", "--workers", "0", "--store", str(store)]
    return CliRunner().invoke(app, cli)


def test_bench_passes_a_suite_files_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = "\n[tracks.fake-settings]\nn_inputs = 3\n"
    res = _bench_suite_file(tmp_path, monkeypatch, tables, "--tracks", "fake-settings")
    assert res.exit_code == 0, res.output
    df = load(tmp_path / "r.sqlite")
    assert (df["scores"].map(lambda s: s["n"]) == 3.0).all()
    assert (df["extras"].map(lambda e: e["track_settings"]) == {"n_inputs": 3}).all()


def test_suite_default_tracks(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    tables = '\n[tracks]\ndefault = ["localize", "repair"]\n\n[tracks.localize]\nn_inputs = 9\n'
    path.write_text(SUITE + tables)
    assert suite_default_tracks(str(path)) == ["localize", "repair"]
    assert suite_track_settings(str(path)) == {"localize": {"n_inputs": 9}}  # the list is no track's table
    assert [s.name for s in load_suite(str(path))] == ["digits-cnn-patch"]
    plain = tmp_path / "plain.toml"
    plain.write_text(SUITE)
    assert suite_default_tracks(str(plain)) is None
    for bad in ('"localize"', "[]", "[1]"):
        path.write_text(SUITE + f"\n[tracks]\ndefault = {bad}\n")
        with pytest.raises(EisError, match=r"\[tracks\] default must be a non-empty list of track names"):
            suite_track_settings(str(path))


def test_bench_runs_a_suites_default_tracks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _bench_suite_file(tmp_path, monkeypatch, '\n[tracks]\ndefault = ["fake-settings"]\n')
    assert res.exit_code == 0, res.output
    assert set(load(tmp_path / "r.sqlite")["track"]) == {"fake-settings"}  # no --tracks: the suite's list
    res = _bench_suite_file(tmp_path, monkeypatch, '\n[tracks]\ndefault = ["no-such-track"]\n')
    assert res.exit_code == 2 and "no-such-track" in res.output


def test_bench_refuses_bad_settings_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eis.cli.bench

    def never(*a: Any, **k: Any) -> None:
        raise AssertionError("the zoo was built")

    monkeypatch.setattr(eis.cli.bench, "_built", never)
    path = tmp_path / "s.toml"
    path.write_text(SUITE + "\n[tracks.localize]\nn_input = 100\n")
    res = CliRunner().invoke(app, ["bench", str(path), "--store", str(tmp_path / "r.sqlite")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [
        "error: track 'localize' has no setting 'n_input'; valid: n_inputs, reduction, n_resamples"
    ]
