"""Synthesis controls: images that know nothing of the trojan, run beside every synthesis tool.

- ``noise_images``: uniform random noise. Whatever the judge answers from it is chance (1/8 on the
  8-way question) plus the judge's own biases, so it measures the floor.
- ``class_mean``: the mean clean image of the target class (what "show me the class" gives without looking
  inside the model). It is computed from the clean inputs given, using their ``labels`` when passed and the
  model's predictions otherwise; image k is the mean of a seeded random half of that class's inputs, so
  the K images differ a little as a tool's would.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.synthesis.base import SynthesisContext, SynthesisTool, device_of


class _Control(SynthesisTool):
    control: ClassVar[bool] = True


@register_tool
class NoiseImages(_Control):
    """Uniform random noise images (control)."""

    name: ClassVar[str] = "noise_images"
    summary: ClassVar[str] = "control: uniform random noise images"

    n_images: int = 10
    seed: int = 0

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand((self.n_images, *clean_inputs.shape[1:]), generator=gen).to(clean_inputs.device)


@register_tool
class ClassMean(_Control):
    """Mean clean image of the target class (control)."""

    name: ClassVar[str] = "class_mean"
    summary: ClassVar[str] = "control: mean clean image of the target class"

    n_images: int = 10
    seed: int = 0

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        x = clean_inputs.float()
        labels = context.labels
        if labels is None:
            with torch.no_grad():
                labels = model(x.to(device_of(model))).argmax(1)
        labels = labels.to(x.device)
        if labels.shape != (len(x),):
            raise EisError(
                f"labels must have shape ({len(x)},) to match clean_inputs; got {tuple(labels.shape)}"
            )
        members = x[labels == target]
        if len(members) == 0:
            members = x  # no input of that class: the overall mean is the best "class" picture left
        gen = torch.Generator().manual_seed(self.seed)
        n = len(members)
        half = max(1, n // 2)
        keys = torch.rand(self.n_images, n, generator=gen)
        idx = keys.argsort(1)[:, :half].to(x.device)  # (K, half): a random half per image
        return members[idx].mean(1)
