"""The ``faithfulness`` track: does removing what a map marks as relevant change the model's prediction?

For each case, the tool explains ``n_inputs`` clean held-out images for the model's own predictions, and
the track scores the maps with the curves of :mod:`eis.tracks.metrics.faithfulness` (softmax probability
of the predicted class):

- ``deletion_morf_auc`` (lower is better), ``deletion_lerf_auc`` (higher is better): pixels set to black,
  most / least relevant first, ``steps`` levels; area under the curve.
- ``insertion_morf_auc`` (higher is better), ``insertion_lerf_auc``: pixels copied into a black image.
- ``aopc_morf`` (higher is better), ``aopc_lerf``: Samek et al.'s region perturbation with uniform noise
  on ``region`` x ``region`` regions.
- ``road_morf_auc`` (lower is better), ``road_lerf_auc``: ROAD with noisy linear imputation at 10..90%.
- ``deletion_gap`` = deletion LeRF - MoRF AUC and ``road_gap`` = ROAD LeRF - MoRF AUC (higher is better).

Headline: ``road_gap``. Plain deletion lets the shape of the removed set leak the class (a black blob
where the evidence was), which rewards maps for their outline; ROAD's imputation removes that leak, and
the LeRF - MoRF gap is the combination Rong et al. (2022) recommend, insensitive to how hard the imputed
images are in general. The verdict compares each tool with the edge detector on the headline, pairing
inputs (``eis.stats.paired_bootstrap_ci``), as the localize track does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from eis.stats import CI, paired_bootstrap_ci, verdict
from eis.tracks.base import CellResult, Track, register_track, standalone
from eis.tracks.figures import curve_panels, mean_curves
from eis.tracks.metrics import faithfulness as fm
from eis.tracks.metrics.similarity import normalize_abs
from eis.tracks.sanity import cell_groups, long_table, predict
from eis.zoo.kinds import IMAGE, kind_of

if TYPE_CHECKING:
    from eis.tools.base import AttributionTool, Tool
    from eis.zoo.case import Case

EDGE_CONTROL = "edge_detector"


def faithfulness_curves(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 32,
    region: int = 4,
    road_fractions: tuple[float, ...] = fm.ROAD_FRACTIONS,
    road_noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 0,
) -> dict[str, torch.Tensor]:
    """Every curve of the track: name -> (N, points) float64 tensor."""
    kw: dict[str, Any] = {"batch_size": batch_size}
    curves = {}
    for order, morf in (("morf", True), ("lerf", False)):
        curves[f"deletion_{order}"] = fm.deletion_curve(
            model, x, target, maps, steps=steps, most_relevant_first=morf, **kw
        )
        curves[f"insertion_{order}"] = fm.insertion_curve(
            model, x, target, maps, steps=steps, most_relevant_first=morf, **kw
        )
        curves[f"region_{order}"] = fm.region_perturbation_curve(
            model, x, target, maps, region=region, most_relevant_first=morf, seed=seed, **kw
        )
        curves[f"road_{order}"] = fm.road_curve(
            model, x, target, maps, fractions=road_fractions, most_relevant_first=morf, noise=road_noise,
            seed=seed, **kw,
        )  # fmt: skip
    return curves


def curve_scores(curves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-input scores (N,) from :func:`faithfulness_curves`' curves."""
    s: dict[str, torch.Tensor] = {}
    for order in ("morf", "lerf"):
        s[f"deletion_{order}_auc"] = fm.area_under_curve(curves[f"deletion_{order}"])
        s[f"insertion_{order}_auc"] = fm.area_under_curve(curves[f"insertion_{order}"])
        s[f"aopc_{order}"] = fm.aopc(curves[f"region_{order}"])
        s[f"road_{order}_auc"] = fm.road_auc(curves[f"road_{order}"])
    s["deletion_gap"] = s["deletion_lerf_auc"] - s["deletion_morf_auc"]
    s["road_gap"] = s["road_lerf_auc"] - s["road_morf_auc"]
    return s


@register_track
class FaithfulnessTrack(Track):
    """Deletion / insertion curves, region perturbation (AOPC) and ROAD on clean held-out inputs."""

    name: ClassVar[str] = "faithfulness"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "attribution"
    headline: ClassVar[str] = "road_gap"
    higher_is_better: ClassVar[bool] = True
    summary: ClassVar[str] = "Does deleting what the map marks change the prediction? (deletion, AOPC, ROAD)"

    n_inputs: ClassVar[int] = 32
    steps: ClassVar[int] = 32
    region: ClassVar[int] = 4
    road_noise: ClassVar[float] = 0.01
    batch_size: ClassVar[int] = 0  # automatic (see eis.tracks.metrics.faithfulness)
    n_resamples: ClassVar[int] = 1000

    def applies_to(self, case: Case) -> bool:
        # image classifiers only; a model trained on permuted labels has no prediction worth explaining
        return kind_of(case) == IMAGE and standalone(case) and case.truth().kind != "label_permutation"

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        model = case.model()
        x, _ = case.inputs(n=self.n_inputs)
        x = x.to(next(model.parameters()).device)
        target = predict(model, x)
        attr: AttributionTool = tool  # type: ignore[assignment]
        maps = attr.attribute(model, x, target).detach()
        curves = faithfulness_curves(
            model, x, target, maps, steps=self.steps, region=self.region, road_noise=self.road_noise,
            seed=seed, batch_size=self.batch_size,
        )  # fmt: skip
        per_input = curve_scores(curves)
        items = {k: v.tolist() for k, v in per_input.items()}
        scores = {k: float(np.mean(v)) for k, v in items.items()}
        extras: dict[str, Any] = {
            "curves": {k: v.mean(0).tolist() for k, v in curves.items()},
            "x": {
                "deletion": np.linspace(0, 1, self.steps + 1).tolist(),
                "insertion": np.linspace(0, 1, self.steps + 1).tolist(),
                "region": list(range(curves["region_morf"].shape[1])),
                "road": list(fm.ROAD_FRACTIONS),
            },
            "region": self.region,
        }
        gallery = {
            "input": x[0].float().cpu().clamp(0, 1).numpy(),
            "map": normalize_abs(maps[:1])[0].float().cpu().numpy(),
        }
        truth_kind = case.truth().kind
        return CellResult(scores=scores, flaw=truth_kind, items=items, extras=extras, gallery=gallery)

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        """Mean deletion, insertion and ROAD curves per tool (most relevant removed first)."""
        panels = {}
        for name, title in (
            ("deletion_morf", "deletion (most relevant first)"),
            ("insertion_morf", "insertion (most relevant first)"),
            ("road_morf", "ROAD (most relevant first)"),
            ("road_lerf", "ROAD (least relevant first)"),
        ):
            axis = name.split("_")[0]
            panels[title] = mean_curves(
                rows,
                lambda e, n=name, a=axis: (e["x"][a], e["curves"][n]) if n in e.get("curves", {}) else None,
            )
        if not any(panels.values()):
            return []
        return [
            (
                "Faithfulness curves: mean over cases of the predicted class's probability as pixels are "
                "removed or inserted",
                curve_panels(panels, "fraction of pixels", "probability"),
            )
        ]

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        if metric != self.headline or ci.n == 0:
            return ""
        if bool(rows.loc[rows["tool"] == tool, "control"].iloc[0]):
            return "control"
        edge = rows[rows["tool"] == EDGE_CONTROL]
        if edge.empty:
            return "beats the edge detector: n/a (edge_detector not run)"
        mine = cell_groups(rows[rows["tool"] == tool], metric)
        theirs = cell_groups(edge, metric)
        shared = [c for c in mine if c in theirs and len(mine[c]) == len(theirs[c])]
        if not shared:
            return "beats the edge detector: n/a (no shared cases)"
        d = paired_bootstrap_ci(
            [mine[c] for c in shared], [theirs[c] for c in shared], n_resamples=self.n_resamples
        )
        return f"beats the edge detector: {verdict(d)} ({metric} {d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}])"
