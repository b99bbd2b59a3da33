"""Controls for LM detection: the image family's weight-statistics and random detectors, on LMs.

Both read only a model's parameters, so the image family's code applies unchanged
(:mod:`eis.tools.detection.baselines`); these classes register them in the ``lm_detect`` family so that
the ``lm_detect`` track runs them beside every method:

- ``lm_weight_stats``: logistic regression on per-tensor weight statistics (mean, std, max |w|, L2 norm,
  kurtosis), fitted on the training population: a detector that never runs the model;
- ``lm_random_scorer``: a uniform random score per model (seeded by the tool seed and a digest of the
  weights) and a random candidate as the target: the floor for AUROC and for target identification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from eis.tools.base import register_tool
from eis.tools.detection.baselines import RandomScorer, WeightStats
from eis.tools.lm_detect.base import LMDetection, LMDetectionTool, LMDetectTask, not_fitted


@register_tool
class LMWeightStats(LMDetectionTool):
    """Control: the image family's ``weight_stats`` on an LM's parameters, fitted on the training models."""

    name: ClassVar[str] = "lm_weight_stats"
    summary: ClassVar[str] = "control: logistic regression on per-tensor weight statistics"
    control: ClassVar[bool] = True
    learned: ClassVar[bool] = True

    c: float = 1.0  # inverse L2 regularisation strength of the logistic regression

    def __post_init__(self) -> None:
        self._inner = WeightStats(c=self.c)
        self._fitted = False

    def fit(self, tasks: Sequence[LMDetectTask], labels: Sequence[int]) -> None:
        self._inner.fit([t.model for t in tasks], labels, torch.zeros(0), torch.zeros(0), 0)
        self._fitted = True

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if not self._fitted:
            raise not_fitted(self.name)
        return self._inner.get_state()

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self._inner.set_state(tensors, meta)
        self._fitted = True

    def inspect(self, task: LMDetectTask) -> LMDetection:
        if not self._fitted:
            raise not_fitted(self.name)
        det = self._inner.inspect(task.model, torch.zeros(0), torch.zeros(0), 0)
        return LMDetection(score=det.score, details=det.details)


@register_tool
class LMRandomScorer(LMDetectionTool):
    """Control: the image family's ``random_scorer``; its random class picks a random candidate target."""

    name: ClassVar[str] = "lm_random_scorer"
    summary: ClassVar[str] = "control: uniform random score and a random candidate as the target"
    control: ClassVar[bool] = True

    seed: int = 0

    def inspect(self, task: LMDetectTask) -> LMDetection:
        det = RandomScorer(seed=self.seed).inspect(
            task.model, torch.zeros(0), torch.zeros(0), len(task.candidates)
        )
        return LMDetection(score=det.score, target=task.candidates[int(det.target or 0)])
