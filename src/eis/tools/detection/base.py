"""The detection-tool contract: given a model and clean data, is the model trojaned, and how?

A detection tool sees a model and clean held-out inputs only (never the truth). ``inspect`` returns a
``Detection``: a model-level suspicion ``score`` (higher = more likely trojaned), optionally the suspected
target class and a reverse-engineered trigger (``mask`` (H, W) in [0, 1] and ``pattern`` (C, H, W) in
[0, 1], stamped as ``x' = (1 - mask) * x + mask * pattern``).

Tools that learn from a population (``learned = True``) implement ``fit`` and round-trip what they learned
through ``get_state``/``set_state`` (tensors + JSON, so that a track can cache it as safetensors). Tools
that score inputs rather than models (``input_level = True``, e.g. STRIP) implement ``input_scores``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from eis.batching import rows_per_pass
from eis.errors import EisError
from eis.tools.base import Tool


@dataclasses.dataclass
class Detection:
    """A detector's verdict on one model.

    score: model-level suspicion, higher = more likely trojaned (NaN for input-level-only tools).
    target: the suspected target class, or None when the tool does not name one.
    mask: (H, W) float in [0, 1], where the recovered trigger is stamped; None when not recovered.
    pattern: (C, H, W) float in [0, 1], what is stamped there.
    details: JSON-serialisable extras (per-class norms, anomaly indices, ...).
    """

    score: float
    target: int | None = None
    mask: torch.Tensor | None = None
    pattern: torch.Tensor | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the recovered trigger to a batch ``x`` (N, C, H, W)."""
        if self.mask is None or self.pattern is None:
            raise EisError("this detection has no recovered trigger (mask and pattern are None)")
        m = self.mask.to(x.device, x.dtype)
        p = self.pattern.to(x.device, x.dtype)
        return (1 - m) * x + m * p


class DetectionTool(Tool):
    """Base class for trojan detectors (family ``detection``)."""

    family: ClassVar[str] = "detection"
    learned: ClassVar[bool] = False  # needs ``fit`` on a training population before ``inspect``
    model_level: ClassVar[bool] = True  # ``inspect`` returns a meaningful model-level score
    input_level: ClassVar[bool] = False  # implements ``input_scores``

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        """Judge one model from clean held-out data. Must not change the model's weights or mode."""
        raise NotImplementedError

    def fit(
        self,
        models: Sequence[nn.Module],
        labels: Sequence[int],
        clean_x: torch.Tensor,
        clean_y: torch.Tensor,
        num_classes: int,
    ) -> None:
        """Learn from a training population: ``labels[i]`` is 1 if ``models[i]`` is trojaned, else 0."""
        raise NotImplementedError(f"{self.name} does not learn")

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What ``fit`` learned, as (tensors, JSON metadata), for caching without pickles."""
        raise NotImplementedError(f"{self.name} has no learned state")

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        raise NotImplementedError(f"{self.name} has no learned state")

    def input_scores(self, model: nn.Module, x: torch.Tensor, clean_x: torch.Tensor) -> torch.Tensor:
        """Per-input suspicion (N,), higher = more likely triggered; ``clean_x`` is reference data."""
        raise NotImplementedError(f"{self.name} does not score inputs")


def check_population(labels: Sequence[int]) -> None:
    """A learned detector needs both clean (0) and trojaned (1) models to learn from."""
    s = set(int(v) for v in labels)
    if not s <= {0, 1}:
        raise EisError(f"detector labels must be 0 (clean) or 1 (trojaned); got {sorted(s)}")
    if s != {0, 1}:
        missing = "clean" if 0 not in s else "trojaned"
        raise EisError(
            f"training population has no {missing} models; a detector needs both clean and trojaned"
        )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for parameterless models)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def batched_softmax(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax outputs of ``model`` on ``x`` in chunks of ``batch_size``, without gradients."""
    outs = []
    with torch.no_grad():
        batch_size = rows_per_pass(x.shape[1:], batch_size)
        for i in range(0, x.shape[0], batch_size):
            outs.append(torch.softmax(model(x[i : i + batch_size]).float(), dim=1))
    return torch.cat(outs) if outs else x.new_zeros((0, 0))
