"""Trigger recovery on language models: the metrics by hand, the tool contract, and the lm_trigger track on
the smoke suite's backdoored LM and its clean twin (through the runner)."""

from __future__ import annotations

import math

import pytest

from eis.tracks.lm_trigger import LMTriggerTrack, score_answer, trigger_bleu

TOOLS = ["gcg", "random_trigger_search", "target_as_prompt", "exhaustive_trigger_search"]
LM_SMOKE = ("lm-backdoor", "lm-clean-twin")


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        ("a", "a", 1.0),
        ("x a", "a", 0.5),  # order 1: one of two candidate words matches
        ("gofi", "gofi to", math.exp(-1)),  # p1 = 1, brevity penalty exp(1 - 2/1)
        ("a b c d", "a b", math.sqrt(2 / 4 * 1 / 3)),  # order 2: p1 = 2/4, p2 = 1/3
        ("b a", "a b", 0.0),  # no bigram in common
        ("a a", "a b", 0.0),  # clipped: p1 = 1/2, no bigram
        ("c a b d", "a b", math.sqrt(2 / 4 * 1 / 3)),
        ("a b c", "a b c", 1.0),
        ("", "a b", 0.0),
    ],
)
def test_trigger_bleu_by_hand(candidate, reference, expected) -> None:
    assert trigger_bleu(candidate.split(), reference.split()) == pytest.approx(expected)


def test_score_answer_by_hand() -> None:
    s = score_answer([["a"], ["b", "c"], ["c", "b"]], [True, False, False], ["b", "c"])
    assert s == {"recall": 1.0, "exact": 1.0, "reasr": pytest.approx(1 / 3), "found": 1.0}
    s = score_answer([["x", "b"]], [True], ["b", "c"])  # order 2: p1 = 1/2, but no bigram in common
    assert s == {"recall": 0.0, "exact": 0.0, "reasr": 1.0, "found": 1.0}
    s = score_answer([["x", "b"], ["b", "x"]], [True, True], ["b"])  # order 1: p1 = 1/2 for both
    assert s == {"recall": 0.5, "exact": 0.0, "reasr": 1.0, "found": 1.0}
    assert score_answer([], [], ["a"]) == {"recall": 0.0, "exact": 0.0, "reasr": 0.0, "found": 0.0}


@pytest.mark.parametrize("name", TOOLS)
def test_every_trigger_tool_passes_the_contract(name) -> None:
    from eis.testing import check_tool
    from eis.tools.base import list_tools

    assert name in list_tools("lm_trigger")
    report = check_tool(name)
    assert not report.refusals and len(report.passed) == 2, str(report)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """Every trigger tool on the smoke LM cases, through the runner; the stored rows and the cases."""
    from eis.results import load
    from eis.runner import run_benchmark
    from eis.zoo import build_case
    from eis.zoo.suites import load_suite

    cases = [build_case(s)[0] for s in load_suite("smoke") if getattr(s, "name", "") in LM_SMOKE]
    store = tmp_path_factory.mktemp("lm") / "lm.db"
    summary = run_benchmark(cases, tools=TOOLS, tracks=["lm_trigger"], workers=0, store=store)
    assert summary.failed == 0
    return load(store), {c.name: c for c in cases}


def _row(rows, case, tool):
    sub = rows[(rows["case_name"] == case) & (rows["tool"] == tool)]
    assert len(sub) == 1
    return sub.iloc[0]


def test_gcg_recovers_the_smoke_backdoor(lm_run) -> None:
    rows, _ = lm_run
    gcg = _row(rows, "lm-backdoor", "gcg")
    assert gcg["flaw"] == "lm_backdoor"
    assert gcg["scores"]["reasr"] >= 0.9 and gcg["scores"]["found"] == 1.0, gcg["extras"]
    assert 0 < gcg["scores"]["queries"] <= 4096
    for answer in gcg["extras"]["answers"]:
        assert answer["submitted"] and all(answer["emits"])


def test_exhaustive_search_finds_one_and_two_token_triggers(lm_run) -> None:
    rows, cases = lm_run
    row = _row(rows, "lm-backdoor", "exhaustive_trigger_search")
    triggers = [p["trigger"] for p in cases["lm-backdoor"].truth().pairs]
    assert sorted(map(len, triggers)) == [1, 2]
    assert row["items"]["exact"] == [1.0, 1.0] and row["scores"]["recall"] == 1.0
    for answer, trigger in zip(row["extras"]["answers"], triggers, strict=True):
        assert answer["submitted"][0] == trigger and answer["emits"][0]


def test_the_clean_twin_is_a_null(lm_run) -> None:
    """No trigger of one or two tokens makes the twin emit a target it never saw; GCG finds none either."""
    rows, _ = lm_run
    for tool in TOOLS:
        row = _row(rows, "lm-clean-twin", tool)
        assert row["flaw"] == "clean" and row["scores"]["found"] == 0.0 and row["scores"]["reasr"] == 0.0
    assert _row(rows, "lm-backdoor", "target_as_prompt")["scores"]["reasr"] == 0.0


def test_leaderboard_has_cis_queries_and_verdicts(lm_run) -> None:
    rows, _ = lm_run
    table = LMTriggerTrack().summarize(rows)
    assert {"lm_backdoor", "clean", "all"} <= set(table["flaw"])
    assert {"recall", "reasr", "exact", "found", "queries", "seconds"} <= set(table["metric"])
    gcg = table[(table.tool == "gcg") & (table.flaw == "lm_backdoor") & (table.metric == "recall")].iloc[0]
    assert gcg["lo"] <= gcg["mean"] <= gcg["hi"] and gcg["verdict"].startswith("beats ")
    pooled = table[(table.tool == "gcg") & (table.flaw == "all") & (table.metric == "recall")].iloc[0]
    assert (pooled["mean"], pooled["n"]) == (gcg["mean"], 1)  # the twin (the null) is never pooled in
    ctrl = table[(table.tool == "exhaustive_trigger_search") & (table.metric == "recall")]
    assert set(ctrl["verdict"]) == {"control"}
    q = table[(table.tool == "exhaustive_trigger_search") & (table.metric == "queries")]
    assert float(q[q.flaw == "all"]["mean"].iloc[0]) > 4096  # the ceiling is outside the budget


def test_track_refuses_other_families_and_applies_only_to_lm(lm_run) -> None:
    from eis.errors import EisError
    from eis.tools.base import make_tool

    _, cases = lm_run
    track = LMTriggerTrack()
    assert all(track.applies_to(c) for c in cases.values())
    with pytest.raises(EisError, match="lm_trigger runs lm_trigger tools"):
        track.run(cases["lm-backdoor"], make_tool("saliency"))
