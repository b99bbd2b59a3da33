"""The faithfulness track end to end on a fake Case with a linear model, whose exact attribution is known."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pandas as pd
import pytest
import torch
from torch import nn

from eis.tools.base import AttributionTool, make_tool
from eis.tracks import load_builtin_tracks
from eis.tracks.base import TRACKS
from eis.tracks.faithfulness import FaithfulnessTrack, curve_scores, faithfulness_curves


def _linear() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return m.eval()


class Exact(AttributionTool):
    """w_target * x: the exact contribution of each pixel to a linear model's target logit."""

    name: ClassVar[str] = "exact"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = model[1].weight[target].view_as(inputs)
        return (w * inputs).detach()


class Anti(Exact):
    """The exact map, negated: removes the least relevant pixels first."""

    name: ClassVar[str] = "anti"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -super().attribute(model, inputs, target)


@dataclasses.dataclass
class _Truth:
    kind: str


class _Case:
    def __init__(self, kind: str = "clean") -> None:
        self.id = self.name = f"lin-{kind}"
        self.dataset, self.arch, self.num_classes, self.input_shape = "toy", "linear", 10, (1, 8, 8)
        self.meta: dict[str, Any] = {}
        self._kind = kind
        self._x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def model(self, device: str | None = None) -> nn.Module:
        return _linear()

    def inputs(self, n: int | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        x = self._x if n is None else self._x[:n]
        return x, torch.zeros(len(x), dtype=torch.long)

    def truth(self) -> _Truth:
        return _Truth(self._kind)


class SmallTrack(FaithfulnessTrack):
    n_inputs: ClassVar[int] = 16
    steps: ClassVar[int] = 16
    region: ClassVar[int] = 2
    n_resamples: ClassVar[int] = 200


def _row(case: _Case, tool: str, control: bool, cell: Any) -> dict[str, Any]:
    return dict(
        case_id=case.id, case_name=case.name, dataset="toy", arch="linear", flaw=cell.flaw, tool=tool,
        family="attribution", control=control, track="faithfulness", status="ok", error="", runtime_s=0.1,
        peak_mem_mb=1.0, scores=cell.scores, items=cell.items, extras=cell.extras,
    )  # fmt: skip


def test_registered_and_applies_to_any_case() -> None:
    load_builtin_tracks()
    assert TRACKS.get("faithfulness") is FaithfulnessTrack
    assert FaithfulnessTrack().applies_to(_Case("patch")) and FaithfulnessTrack().applies_to(_Case())
    assert FaithfulnessTrack.family == "attribution" and FaithfulnessTrack.higher_is_better


def test_curves_and_scores_consistent() -> None:
    case = _Case()
    model = _linear()
    x, _ = case.inputs(6)
    target = model(x).argmax(1)
    maps = Exact().attribute(model, x, target)
    curves = faithfulness_curves(
        model, x, target, maps, steps=8, region=4, road_fractions=(0.25, 0.5), batch_size=7
    )
    assert curves["deletion_morf"].shape == (6, 9) and curves["region_morf"].shape == (6, 5)
    assert curves["road_lerf"].shape == (6, 2)
    # every curve starts from f(x) (deletion, region) or f(baseline) (insertion), shared by both orders
    assert torch.allclose(curves["deletion_morf"][:, 0], curves["deletion_lerf"][:, 0])
    assert torch.allclose(curves["insertion_morf"][:, -1], curves["deletion_morf"][:, 0])
    s = curve_scores(curves)
    assert torch.allclose(s["road_gap"], s["road_lerf_auc"] - s["road_morf_auc"])
    assert torch.allclose(s["aopc_morf"], (curves["region_morf"][:, :1] - curves["region_morf"]).mean(1))


def test_exact_map_is_faithful_and_beats_its_negation_and_the_edge_detector() -> None:
    case = _Case()
    track = SmallTrack()
    cells = {"exact": track.run(case, Exact()), "anti": track.run(case, Anti())}
    cells["edge_detector"] = track.run(case, make_tool("edge_detector"))
    ex, anti = cells["exact"].scores, cells["anti"].scores
    assert len(cells["exact"].items["road_gap"]) == 16 and cells["exact"].flaw == "clean"
    # the exact contributions, removed most relevant first, drop the score fastest
    assert ex["deletion_morf_auc"] < anti["deletion_morf_auc"]
    assert ex["deletion_gap"] > 0 > anti["deletion_gap"]
    assert ex["road_gap"] > 0 > anti["road_gap"]
    assert ex["aopc_morf"] > anti["aopc_morf"] and ex["insertion_morf_auc"] > anti["insertion_morf_auc"]
    # negating the map swaps MoRF and LeRF exactly for deletion (no ties in continuous maps)
    assert ex["deletion_morf_auc"] == pytest.approx(anti["deletion_lerf_auc"])
    assert len(cells["exact"].extras["curves"]["deletion_morf"]) == 17
    assert cells["exact"].gallery["map"].shape == (8, 8)

    rows = pd.DataFrame([_row(case, t, t == "edge_detector", c) for t, c in cells.items()])
    table = track.summarize(rows)
    head = table[(table.metric == "road_gap") & (table.flaw == "all")].set_index("tool")
    assert head.loc["exact", "verdict"].startswith("beats the edge detector: yes")
    assert head.loc["anti", "verdict"].startswith("beats the edge detector: no")
    assert head.loc["edge_detector", "verdict"] == "control"
    assert head.loc["exact", "lo"] <= head.loc["exact", "mean"] <= head.loc["exact", "hi"]
    assert head.loc["exact", "n"] == 1
    assert (table[table.metric != "road_gap"].verdict == "").all()
    no_edge = track.summarize(rows[rows.tool != "edge_detector"])
    assert "n/a" in no_edge[(no_edge.metric == "road_gap")].verdict.iloc[0]


def test_run_is_deterministic() -> None:
    case = _Case()
    a = SmallTrack().run(case, Exact(), seed=3)
    b = SmallTrack().run(case, Exact(), seed=3)
    assert a.items == b.items


def test_faithfulness_applies_to_image_classifiers_only(smoke):
    from eis.tracks.faithfulness import FaithfulnessTrack
    from eis.zoo.kinds import kind_of

    track = FaithfulnessTrack()
    applied = {kind_of(c) for c in smoke.values() if track.applies_to(c)}
    assert applied == {"image"}
    assert {kind_of(c) for c in smoke.values()} > applied  # the other kinds exist and are left out
