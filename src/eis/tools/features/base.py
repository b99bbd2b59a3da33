"""The features contract: what a feature-finding tool receives and returns, in one place.

A features tool receives a :class:`FeatureTask` and never the truth:

- ``train`` (N, d): activations to fit on; ``inputs`` (M, d): held-out activations to encode;
- ``width``: how many latents to return at most (the case's dictionary size);
- ``labels`` (N, k) bool, one column per labelled concept, only for supervised tools (``supervised =
  True``): the probe and difference-in-means get the concepts' labels on the training rows; unsupervised
  tools get ``None``.

It returns :class:`FoundFeatures`: ``directions`` (m, d) with m <= width (each a direction in activation
space: an SAE's decoder rows, a probe's weight vector, a principal component), ``activations`` (M, m) of
each latent on each held-out input, where a latent *fires* when its activation is above 0, and, for tools
that reconstruct their input, ``reconstruction`` (M, d).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from eis.errors import EisError
from eis.tools.base import Tool


@dataclasses.dataclass
class FeatureTask:
    """What a features tool receives (see the module docstring)."""

    train: torch.Tensor
    inputs: torch.Tensor
    width: int
    labels: torch.Tensor | None = None
    seed: int = 0

    def check(self, supervised: bool = False) -> None:
        """Raise EisError (one line) on a malformed task."""
        for name in ("train", "inputs"):
            t = getattr(self, name)
            if (
                not isinstance(t, torch.Tensor)
                or t.dim() != 2
                or t.shape[0] == 0
                or not t.is_floating_point()
            ):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise EisError(f"{name} activations must be a non-empty (rows, d) float tensor, got {shape}")
            if not torch.isfinite(t).all():
                raise EisError(f"{name} activations hold NaN or infinite values")
        if self.inputs.shape[1] != self.train.shape[1]:
            raise EisError(
                f"inputs have {self.inputs.shape[1]} dimensions but train has {self.train.shape[1]}"
            )
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise EisError(f"width must be a positive integer, got {self.width!r}")
        if supervised:
            y = self.labels
            if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != self.train.shape[0]:
                shape = tuple(y.shape) if isinstance(y, torch.Tensor) else None
                raise EisError(
                    f"a supervised tool needs labels shaped (train rows {self.train.shape[0]}, concepts), "
                    f"got {shape}"
                )


@dataclasses.dataclass
class FoundFeatures:
    """What a features tool returns (see the module docstring)."""

    directions: torch.Tensor
    activations: torch.Tensor
    reconstruction: torch.Tensor | None = None

    def check(self, task: FeatureTask, tool: str) -> None:
        """Raise EisError naming ``tool`` when the answer does not fit ``task``."""
        m, d = self.directions.shape if self.directions.dim() == 2 else (-1, -1)
        if d != task.train.shape[1] or not 1 <= m <= task.width:
            raise EisError(
                f"{tool} returned directions of shape {tuple(self.directions.shape)}; expected (m, "
                f"{task.train.shape[1]}) with 1 <= m <= width {task.width}"
            )
        if self.activations.shape != (task.inputs.shape[0], m):
            raise EisError(
                f"{tool} returned activations of shape {tuple(self.activations.shape)}; expected "
                f"{(task.inputs.shape[0], m)}"
            )
        if self.reconstruction is not None and self.reconstruction.shape != task.inputs.shape:
            raise EisError(f"{tool} returned a reconstruction of shape {tuple(self.reconstruction.shape)}")
        for name in ("directions", "activations", "reconstruction"):
            t = getattr(self, name)
            if t is not None and not torch.isfinite(t).all():
                raise EisError(f"{tool} returned {name} with NaN or infinite values")


class FeatureTool(Tool):
    """Base class: ``find(task) -> FoundFeatures``, deterministic in ``task.seed``; never mutates the task."""

    family: ClassVar[str] = "features"
    supervised: ClassVar[bool] = False  # receives the concepts' labels (a probe): the ceiling, not a rival
    sparse: ClassVar[bool] = False  # a dictionary-learning objective (SAE): plotted in the MCC-vs-L0 figure

    def find(self, task: FeatureTask) -> FoundFeatures:
        raise NotImplementedError


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` scaled to unit norm (zero rows stay zero)."""
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
