"""PEZ, GBDA and UAT trigger recovery: the family contract, the budget, traced runs (the answer recorded at a
smaller budget is what a run at that budget returns), recovery on the smoke suite's backdoored LM, and the
lm_trigger track's recall-vs-budget figure in the HTML report."""

from __future__ import annotations

import dataclasses

import pytest

from eis.tracks.lm_trigger import BUDGET, CHECKPOINTS, LMTriggerTrack

NEW = ["pez", "gbda", "uat"]
LM_SMOKE = ("lm-backdoor", "lm-clean-twin")


@pytest.mark.parametrize("name", NEW)
def test_new_trigger_tools_pass_the_contract(name) -> None:
    from eis.testing import check_tool
    from eis.tools.base import list_tools

    assert name in list_tools("lm_trigger") and name not in list_tools("lm_trigger", controls=True)
    report = check_tool(name)
    assert not report.refusals and len(report.passed) == 2, str(report)


@pytest.mark.parametrize("name", NEW)
def test_new_trigger_tools_stay_within_the_budget(name) -> None:
    from eis.tools.base import make_tool
    from eis.tools.lm_trigger.contract import contract_task

    task = dataclasses.replace(contract_task(), budget=333)
    answer = make_tool(name).recover(task)
    assert answer.queries == task.queries and 300 < answer.queries <= 333  # spends nearly all of it


@pytest.fixture(scope="module")
def lm_cases():
    from eis.zoo import build_case
    from eis.zoo.suites import load_suite

    return {s.name: build_case(s)[0] for s in load_suite("smoke") if getattr(s, "name", "") in LM_SMOKE}


@pytest.mark.parametrize("name", ["gcg", "uat", "random_trigger_search"])
def test_a_traced_run_gives_what_runs_at_smaller_budgets_give(lm_cases, name) -> None:
    """On the smoke backdoor's 2-word trigger: one run traced at 256 and 1024 queries, then runs with those
    budgets; the same triggers, the same queries, and the traced run's own answer unchanged."""
    from eis.tools.base import make_tool
    from eis.tools.lm_trigger.base import TriggerTask

    case = lm_cases["lm-backdoor"]
    pair = next(p for p in case.truth().pairs if len(p["trigger"]) == 2)
    task = TriggerTask(case.model(), case.tokenizer(), " ".join(pair["target"]), budget=2048)
    plain = make_tool(name).recover(task)
    traced = dataclasses.replace(task, checkpoints=(256, 1024))
    answer = make_tool(name).recover(traced)
    assert answer.token_ids == plain.token_ids and answer.queries == plain.queries
    assert set(traced.trace) == {256, 1024}
    for b, at in traced.trace.items():
        run = make_tool(name).recover(dataclasses.replace(task, budget=b))
        assert (run.token_ids, run.queries) == (at.token_ids, at.queries), b
        assert at.queries <= b


@pytest.fixture(scope="module")
def relax_run(lm_cases, tmp_path_factory):
    """The three tools on the smoke backdoor and UAT on its twin, through the runner (which adds the family's
    controls: about 4 minutes on one loaded core)."""
    from eis.results import load
    from eis.runner import run_benchmark

    store = tmp_path_factory.mktemp("relax") / "lm.db"
    backdoor, twin = lm_cases["lm-backdoor"], lm_cases["lm-clean-twin"]
    for cases, tools in (([backdoor], NEW), ([twin], ["uat"])):
        summary = run_benchmark(cases, tools=tools, tracks=["lm_trigger"], workers=0, store=store)
        assert summary.failed == 0
    return load(store), store


def _row(run, case, tool):
    rows = run[0]
    sub = rows[(rows["case_name"] == case) & (rows["tool"] == tool) & (rows["track"] == "lm_trigger")]
    assert len(sub) == 1
    return sub.iloc[0]


# measured on the smoke backdoor (triggers `bruse` and `gofi to`): PEZ and UAT submit both triggers word for
# word (recall 1.0), GBDA `bruse` and `paivoula gofi to` (recall 0.79); all three make both targets appear
@pytest.mark.slow
@pytest.mark.parametrize(("name", "recall"), [("pez", 0.9), ("gbda", 0.5), ("uat", 0.9)])
def test_new_tools_recover_the_smoke_backdoor(relax_run, name, recall) -> None:
    row = _row(relax_run, "lm-backdoor", name)
    assert row["scores"]["found"] == 1.0 and row["scores"]["reasr"] >= 0.8, row["extras"]["answers"]
    assert row["scores"]["recall"] >= recall, row["extras"]["answers"]
    assert 0 < row["scores"]["queries"] <= BUDGET


@pytest.mark.slow
def test_uat_finds_nothing_on_the_clean_twin(relax_run) -> None:
    row = _row(relax_run, "lm-clean-twin", "uat")
    assert row["flaw"] == "clean" and row["scores"]["found"] == 0.0 and row["scores"]["reasr"] == 0.0


@pytest.mark.slow
def test_cells_hold_budget_curves_ending_at_their_scores(relax_run) -> None:
    for name in NEW:
        row = _row(relax_run, "lm-backdoor", name)
        curve = row["extras"]["curve"]
        assert curve["budget"] == [float(b) for b in (*CHECKPOINTS, BUDGET)]
        assert curve["recall"][-1] == pytest.approx(row["scores"]["recall"])
        assert curve["reasr"][-1] == pytest.approx(row["scores"]["reasr"])
        assert all(0.0 <= v <= 1.0 for v in curve["recall"] + curve["reasr"])


@pytest.mark.slow
def test_the_budget_figure_renders_in_the_html_report(relax_run) -> None:
    from eis.report import build_report_data, render_html

    rows, store = relax_run
    ((caption, fig),) = LMTriggerTrack().figures(rows)
    assert "query budget" in caption
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["recall (backdoors)", "REASR (backdoors)", "REASR (clean twins: the null)"]
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}  # the family's controls ran too
    assert set(NEW) | {"exhaustive_trigger_search (control)", "random_trigger_search (control)"} <= set(lines)
    assert len(lines["exhaustive_trigger_search (control)"].get_xdata()) == 1  # unbudgeted: one point
    assert list(lines["pez"].get_xdata()) == [*CHECKPOINTS, BUDGET]
    assert LMTriggerTrack().figures(rows.iloc[:0]) == []
    html = render_html(build_report_data(store))
    assert caption in html and "data:image/png;base64," in html
