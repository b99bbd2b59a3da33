"""The synthesize track on the smoke zoo, and its summary checked against hand-computed values."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import pandas as pd
import pytest
import torch
from test_judge import TEST_STEPS

from eis.errors import EisError
from eis.tools.base import make_tool
from eis.tools.synthesis.base import SynthesisTool
from eis.tracks.base import TRACKS
from eis.tracks.judge import CHANCE, build_question
from eis.tracks.synthesize import COMBINED, ORACLE, SynthesizeTrack


@dataclasses.dataclass
class Shown(SynthesisTool):
    """Test double: returns the pictures it was built with (a tool that 'found' the trigger)."""

    name: ClassVar[str] = "shown"
    images: torch.Tensor | None = None

    def synthesize(self, model, target, clean_inputs, *, labels=None, dataset=None):
        return self.images


def test_registered_and_applies_to_trojans_with_pictures(smoke) -> None:
    from eis.tracks import load_builtin_tracks

    load_builtin_tracks()
    assert TRACKS.get("synthesize") is SynthesizeTrack
    track = SynthesizeTrack()
    applies = {n for n in smoke if track.applies_to(smoke[n])}
    assert {"digits-cnn-blend", "digits-cnn-natural", "digits-cnn-patch", "digits-resnet-patch"} <= applies
    assert not applies & {"digits-cnn-clean", "digits-cnn-warp", "digits-cnn-spurious"}
    assert all(smoke[n].truth().kind in ("patch", "blend", "natural") for n in applies)


def test_run_scores_the_true_trigger_and_noise(smoke) -> None:
    track = SynthesizeTrack(judge_steps=TEST_STEPS, n_gallery=2)
    case = smoke["digits-cnn-patch"]
    truth = case.truth()
    q = build_question(truth, 1, 16, key=case.id)
    shown = Shown(images=q.options[q.answer].display(16)[None].repeat(10, 1, 1, 1))
    good = track.run(case, shown)
    assert good.scores["correct"] == 1.0 and good.scores["rank"] == 1.0 and good.scores["margin"] > 0
    assert good.flaw == "patch" and good.extras["answer"] == good.extras["choice"] == q.answer
    assert set(good.gallery) == {"synth_0", "synth_1", "true_trigger"}
    assert good.gallery["true_trigger"].shape == (1, 16, 16)
    noise = track.run(case, make_tool("noise_images"), seed=1)
    assert noise.scores["correct"] in (0.0, 1.0) and 1 <= noise.scores["rank"] <= 8
    assert len(noise.extras["similarities"]) == 8


def test_run_rejects_bad_tools_and_outputs(smoke) -> None:
    track = SynthesizeTrack(judge_steps=TEST_STEPS)
    case = smoke["digits-cnn-patch"]
    with pytest.raises(EisError, match="synthesis tools"):
        track.run(case, make_tool("saliency"))
    with pytest.raises(EisError, match="expected images"):
        track.run(case, Shown(images=torch.rand(10, 3, 16, 16)))
    with pytest.raises(EisError, match=r"in \[0, 1\]"):
        track.run(case, Shown(images=torch.rand(10, 1, 16, 16) * 3))
    with pytest.raises(EisError, match="flaw"):
        track.synthesize(smoke["digits-cnn-warp"], make_tool("noise_images"))


def _row(
    case: str,
    flaw: str,
    tool: str,
    correct: float,
    sims: list[float],
    answer: int,
    control=False,
    status="ok",
) -> dict:
    return {
        "case_id": case,
        "case_name": case,
        "flaw": flaw,
        "tool": tool,
        "control": control,
        "track": "synthesize",
        "status": status,
        "scores": {"correct": correct, "rank": 1.0 if correct else 2.0},
        "extras": {"similarities": sims, "answer": answer},
    }


def test_summarize_by_hand() -> None:
    e = [0.0] * 8

    def sims(best: int, second: int = -1, v: float = 0.5) -> list[float]:
        s = list(e)
        s[best] = 1.0
        if second >= 0:
            s[second] = v
        return s

    rows = [
        # case a (patch, answer 0): tool A right, tool B wrong
        _row("a", "patch", "A", 1.0, sims(0), 0),
        _row("a", "patch", "B", 0.0, sims(3, 0, 0.9), 0),
        # case b (blend, answer 2): both wrong; combined: A (1 at 5, 0.5 at 2) + B (1 at 6, 0.9 at 2) -> 2
        _row("b", "blend", "A", 0.0, sims(5, 2, 0.5), 2),
        _row("b", "blend", "B", 0.0, sims(6, 2, 0.9), 2),
        # case c (patch, answer 1): A wrong, B failed
        _row("c", "patch", "A", 0.0, sims(4), 1),
        _row("c", "patch", "B", 0.0, e, 1, status="failed"),
        _row("a", "patch", "noise", 0.0, sims(7), 0, control=True),
        _row("b", "blend", "noise", 1.0, sims(2), 2, control=True),
        _row("c", "patch", "noise", 0.0, sims(7), 1, control=True),
    ]
    long = SynthesizeTrack(n_resamples=200).summarize(pd.DataFrame(rows))
    acc = long[long["metric"] == "accuracy"].set_index(["tool", "flaw"])
    assert acc.loc[("A", "all"), "mean"] == pytest.approx(1 / 3) and acc.loc[("A", "all"), "n"] == 3
    assert acc.loc[("B", "all"), "mean"] == 0.0 and acc.loc[("B", "all"), "n_failed"] == 1
    assert acc.loc[("A", "patch"), "mean"] == 0.5 and acc.loc[("A", "blend"), "mean"] == 0.0
    assert acc.loc[("noise", "all"), "verdict"] == "control"
    # combined (mean similarities): a -> A's 1.0 at 0 vs B's 0.9 at 0: option 0, right; b -> option 2, right;
    # c -> only A: option 4, wrong. 2/3. Oracle (any tool right): a only. 1/3, chance 1 - (7/8)^2.
    assert acc.loc[(COMBINED, "all"), "mean"] == pytest.approx(2 / 3)
    assert acc.loc[(ORACLE, "all"), "mean"] == pytest.approx(1 / 3)
    assert acc.loc[(ORACLE, "all"), "chance"] == pytest.approx(1 - (7 / 8) ** 2)
    assert acc.loc[(COMBINED, "all"), "chance"] == CHANCE and acc.loc[("A", "all"), "chance"] == CHANCE
    assert acc.loc[("A", "all"), "best_control"] == "noise"
    # margin over the best control, paired by case: A - noise = (1 - 0, 0 - 1, 0 - 0) -> 0
    assert acc.loc[("A", "all"), "margin"] == pytest.approx(0.0)
    assert acc.loc[("A", "all"), "verdict"].startswith("above chance (0.125): ")
    rank = long[(long["metric"] == "rank") & (long["tool"] == "A") & (long["flaw"] == "all")]
    assert rank["mean"].iloc[0] == pytest.approx((1 + 2 + 2) / 3) and rank["chance"].iloc[0] == 4.5
    assert list(long.columns[:4]) == ["tool", "control", "flaw", "metric"]
    assert math.isnan(acc.loc[("noise", "all"), "margin"])
    assert SynthesizeTrack().summarize(pd.DataFrame(columns=["track"])).empty
