"""The circuits track on compiled and realistic tracr cases: the known results and the scoring itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import eis.zoo
from eis.errors import EisError
from eis.stats import CI
from eis.tools import make_tool
from eis.tracks.circuits import EDGE_PERCENTS, CircuitsTrack
from eis.tracks.faithfulness import FaithfulnessTrack
from eis.zoo.circuits.spec import CircuitSpec

COMPILED = [("reverse", 0), ("sort_unique", 0), ("detect_pattern", 0)]
REALISTIC = [
    ("reverse", 0),
    ("sort_unique", 0),
    ("sort_unique", 1),
    ("detect_pattern", 0),
    ("hist", 0),
    ("hist", 1),
]


def _case(program: str, seed: int, realistic: bool, ablation: str = "zero"):
    name = f"t-{program}-{ablation}-{'r' if realistic else 'c'}{seed}"
    spec = CircuitSpec(
        name, program, ablation, rotate=realistic, distractors=realistic, seed=seed, n_inputs=32
    )
    return eis.zoo.build_case(spec)[0]


@pytest.fixture(scope="module")
def cases():
    return {
        "compiled": [_case(p, s, False) for p, s in COMPILED],
        "realistic": [_case(p, s, True) for p, s in REALISTIC],
    }


def _row(case, tool, result):
    return {
        "case_id": case.id, "case_name": case.name, "tool": tool.name, "control": tool.control,
        "track": "circuits", "status": "ok", "flaw": result.flaw, "scores": result.scores,
        "items": result.items, "extras": result.extras,
    }  # fmt: skip


def test_known_results_patching_and_acdc_recover_compiled_circuits(cases):
    """Conmy et al. (2023): exact patching and ACDC under zero ablation find tracr circuits (ROC-AUC ~1)."""
    track = CircuitsTrack()
    for case in cases["compiled"]:
        patching = track.run(case, make_tool("activation_patching")).scores
        acdc = track.run(case, make_tool("acdc")).scores
        assert patching["node_auc"] >= 0.95, (case.name, patching)
        assert acdc["edge_auc"] >= 0.95 and acdc["circuit_recall"] == 1.0, (case.name, acdc)
        assert acdc["cpr"] > track.run(case, make_tool("random_circuit")).scores["cpr"]


def test_weight_norm_finds_compiled_circuits_but_is_near_chance_on_realistic_variants(cases):
    track = CircuitsTrack()
    compiled = [track.run(c, make_tool("weight_norm")).scores["node_auc"] for c in cases["compiled"]]
    realistic = [track.run(c, make_tool("weight_norm")).scores["node_auc"] for c in cases["realistic"]]
    assert min(compiled) > 0.999  # unused components have all-zero weights: no interpretability needed
    assert 0.2 <= float(np.mean(realistic)) <= 0.7, realistic
    patching = [track.run(c, make_tool("activation_patching")).scores["node_auc"] for c in cases["realistic"]]
    assert min(patching) >= 0.95


def test_scores_faithfulness_and_the_everything_control(cases):
    track = CircuitsTrack()
    case = cases["realistic"][0]
    everything = track.run(case, make_tool("everything"))
    assert everything.scores["node_auc"] == 0.5 and everything.scores["edge_auc"] == 0.5
    assert everything.scores["circuit_recall"] == 1.0 and everything.scores["circuit_precision"] < 0.2
    res = track.run(case, make_tool("edge_patching"))
    f = res.extras["faithfulness"]["f"]
    assert res.extras["faithfulness"]["k_percent"] == list(EDGE_PERCENTS) and f[-1] == pytest.approx(1.0)
    x = np.asarray(EDGE_PERCENTS) / 100
    by_hand = sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1))
    cmd = sum((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1))
    assert res.scores["cpr"] == pytest.approx(by_hand) and res.scores["cmd"] == pytest.approx(cmd)
    assert res.scores["cpr"] > everything.scores["cpr"] and res.flaw == "realistic/zero"


def test_applies_only_to_circuit_cases_and_runs_only_circuit_tools(cases):
    track, case = CircuitsTrack(), cases["compiled"][0]
    assert track.applies_to(case) and not FaithfulnessTrack().applies_to(case)
    with pytest.raises(EisError, match="circuits runs circuit tools; 'saliency' is a attribution tool"):
        track.run(case, make_tool("saliency"))


def test_summary_verdicts_and_figure(cases):
    track = CircuitsTrack()
    tools = [make_tool(n) for n in ("activation_patching", "random_circuit", "weight_norm")]
    rows = pd.DataFrame([_row(c, t, track.run(c, t)) for c in cases["realistic"][:4] for t in tools])
    table = track.summarize(rows)
    head = table[(table.metric == "node_auc") & (table.flaw == "all")].set_index("tool")
    assert head.loc["activation_patching", "mean"] > 0.999
    assert head.loc["activation_patching", "verdict"].startswith("beats ")
    assert head.loc["weight_norm", "verdict"] == "control"
    ((caption, fig),) = track.figures(rows)
    assert "Faithfulness" in caption and fig.axes


def test_verdict_picks_the_control_of_the_highest_mean_over_all_items() -> None:
    """With several items per case, the best control is the one of the highest mean of case means (not the
    one whose first items are highest)."""

    def cell(tool: str, control: bool, case: str, vals: list[float]) -> dict:
        return {"tool": tool, "control": control, "case_id": case, "items": {"m": vals}, "scores": {}}

    rows = pd.DataFrame(
        [
            cell("a_first_high", True, "c1", [1.0, 0.0, 0.0, 0.0]),  # mean 0.25, first item 1
            cell("a_first_high", True, "c2", [1.0, 0.0, 0.0, 0.0]),
            cell("b_mean_high", True, "c1", [0.0, 1.0, 1.0, 1.0]),  # mean 0.75, first item 0
            cell("b_mean_high", True, "c2", [0.0, 1.0, 1.0, 1.0]),
            cell("method", False, "c1", [0.5, 0.5, 0.5, 0.5]),
            cell("method", False, "c2", [0.5, 0.5, 0.5, 0.5]),
        ]
    )
    track = CircuitsTrack()
    track.headline = "m"
    out = track._verdict("method", "all", "m", CI(0.5, 0.5, 0.5, 2, 8), rows)
    assert out.startswith("beats b_mean_high:"), out
