"""The ``feature_steering`` track: does adding a found direction to the hidden layer turn its feature on?

Asked of the zoo's ``toy`` feature cases, whose activations are the hidden layer ``h = W x`` of a trained
toy model ``x -> ReLU(W^T h + b)`` (Elhage et al. 2022), so that steering has a measurable effect: the
model's output for each feature. For each feature the model represents, the tool's best-matching latent
(highest absolute cosine with the true direction, signed by it) gives a unit direction ``u``; on the
held-out inputs where the feature is silent, activation addition sets ``h' = h + a u`` with ``a`` the norm
of the feature's own embedding (what the feature adds to ``h`` at magnitude 1). Scores, per feature:

- ``steer_success`` (headline): 1 where the feature's output rises by at least half of magnitude 1 on
  average *and* at least twice as much as any other feature's output: the direction switches on its
  feature and little else;
- ``steer_gain``: the mean rise of the feature's own output;
- ``steer_spill``: the mean rise of the largest other output (what else the direction switches on).

Activation addition follows Turner et al. (2023); the verdict compares each tool with the random-direction
control, paired by case and feature.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch

from eis.errors import EisError
from eis.stats import CI
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures
from eis.tracks.base import CellResult, Track, register_track
from eis.tracks.features import FeaturesTrack, case_group
from eis.tracks.metrics import features as fm
from eis.tracks.sanity import long_table
from eis.zoo.kinds import kind_of

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case


def steering_effects(
    model: torch.nn.Module,
    hidden: torch.Tensor,
    silent: torch.Tensor,
    directions: torch.Tensor,
    scale: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """Per feature i: (mean rise of output i, mean rise of the largest other output) when ``scale[i] *
    directions[i]`` is added to ``hidden`` on the rows where ``silent[:, i]``; batched over rows."""
    gains, spills = [], []
    with torch.no_grad():
        base = torch.relu(hidden @ model.W + model.b)
        for i in range(directions.shape[0]):
            rows = silent[:, i]
            if not rows.any():
                gains.append(math.nan)
                spills.append(math.nan)
                continue
            h = hidden[rows] + scale[i] * directions[i]
            rise = (torch.relu(h @ model.W + model.b) - base[rows]).mean(0)
            gains.append(float(rise[i]))
            others = torch.cat([rise[:i], rise[i + 1 :]])
            spills.append(float(others.max()) if len(others) else 0.0)
    return np.asarray(gains), np.asarray(spills)


@register_track
class FeatureSteeringTrack(Track):
    """Activation addition with found directions, scored by the toy model's own outputs."""

    name: ClassVar[str] = "feature_steering"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "features"
    headline: ClassVar[str] = "steer_success"
    summary: ClassVar[str] = "adding the found direction switches on its feature and little else"
    n_resamples: int = 1000

    def applies_to(self, case: Case) -> bool:
        return kind_of(case) == "features" and case.meta.get("source") == "toy"

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, FeatureTool):
            raise EisError(
                f"feature_steering runs features tools; {tool.name!r} is a {tool.family or 'other'} tool"
            )
        truth = case.truth()  # type: ignore[attr-defined]
        train, inputs = case.activations("train"), case.activations("eval")  # type: ignore[attr-defined]
        labels = truth.labels("train") if tool.supervised else None
        task = FeatureTask(train, inputs, case.width, labels, seed)  # type: ignore[attr-defined]
        found = tool.find(task)
        if not isinstance(found, FoundFeatures):
            raise EisError(f"{tool.name} returned {type(found).__name__}, not FoundFeatures")
        found.check(task, tool.name)
        toy = case.model("cpu").toy  # type: ignore[union-attr]
        keep = truth.represented
        best, sign = fm.best_latents(truth.dictionary, found.directions)
        u = found.directions.double().cpu()[best] * torch.from_numpy(sign)[:, None]
        u = (u / u.norm(dim=1, keepdim=True).clamp(min=1e-12)).float()
        scale = toy.W.detach().norm(dim=0)  # (n,): each feature's embedding norm
        gains, spills = steering_effects(toy, inputs.float(), ~truth.labels("eval"), u, scale)
        gains, spills = gains[keep.numpy()], spills[keep.numpy()]
        success = np.where(np.isfinite(gains), ((gains >= 0.5) & (spills <= gains / 2)).astype(float), np.nan)
        items = {"steer_success": success, "steer_gain": gains, "steer_spill": spills}
        scores = {k: float(np.nanmean(v)) for k, v in items.items() if np.isfinite(v).any()}
        return CellResult(
            scores=scores,
            flaw=case_group(truth.spec),
            items={k: [float(x) for x in v] for k, v in items.items()},
        )

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        return FeaturesTrack._verdict(self, tool, flaw, metric, ci, rows)  # type: ignore[arg-type]
