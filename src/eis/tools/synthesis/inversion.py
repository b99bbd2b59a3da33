"""Trigger inversion (Neural Cleanse, Wang et al. 2019) as a synthesis tool: the smallest mask x pattern
that sends clean inputs to the given target class.

A thin wrapper over the detection family's batched optimiser (``eis.tools.detection.neural_cleanse.
reverse_engineer``), run for the one target class from ``restarts`` random starts (seeds ``seed``,
``seed + 1``, ...). Image k shows restart ``k % restarts``'s recovered trigger as ``mask * pattern`` on
black (the picture of the Neural Cleanse paper); every second round of restarts is zoomed to the bounding
box of the mask's strong pixels, so that a small trigger is shown as large as the image, as the other
patch tools show theirs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.detection.neural_cleanse import reverse_engineer
from eis.tools.synthesis.base import SynthesisContext, SynthesisTool, device_of


@register_tool
class TriggerInversion(SynthesisTool):
    """Neural Cleanse-style mask x pattern for the target class (reuses the detection family's optimiser)."""

    name: ClassVar[str] = "trigger_inversion"
    summary: ClassVar[str] = "Neural Cleanse mask x pattern reverse-engineered for the target class"

    n_images: int = 10
    restarts: int = 2
    steps: int = 150
    lr: float = 0.1
    lam: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        num_classes = context.num_classes
        if self.restarts < 1:
            raise EisError(f"trigger_inversion: restarts must be >= 1; got {self.restarts}")
        dev = device_of(model)
        x = clean_inputs.to(dev, torch.float32)
        masks, patterns = [], []
        for r in range(self.restarts):
            out = reverse_engineer(
                model,
                x,
                num_classes,
                classes=[target],
                steps=self.steps,
                lr=self.lr,
                lam=self.lam,
                batch_size=self.batch_size,
                seed=self.seed + r,
            )
            masks.append(out["masks"][0])
            patterns.append(out["patterns"][0])
        k = self.n_images
        which = torch.arange(k) % self.restarts
        m = torch.stack(masks)[which][:, None]  # (K, 1, H, W)
        images = m * torch.stack(patterns)[which]
        zoom = (torch.arange(k) // self.restarts) % 2 == 1
        if zoom.any():
            images[zoom] = zoom_to_mask(images[zoom], m[zoom, 0])
        return images.detach().to(clean_inputs.device)


def zoom_to_mask(images: torch.Tensor, masks: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Each image cropped to the bounding box of its mask's strong pixels (>= ``level`` x the maximum),
    squared, and enlarged (nearest) back to the image size."""
    n, _, h, w = images.shape
    out = images.clone()
    for i in range(n):  # n crops of different sizes: one resize each (K is small)
        strong = (masks[i] >= level * masks[i].max()).nonzero()
        if len(strong) == 0:
            continue
        (r0, c0), (r1, c1) = strong.min(0).values.tolist(), strong.max(0).values.tolist()
        side = max(r1 - r0, c1 - c0) + 1
        r0, c0 = min(max(0, r0), h - side), min(max(0, c0), w - side)
        crop = images[i : i + 1, :, r0 : r0 + side, c0 : c0 + side]
        out[i] = torch.nn.functional.interpolate(crop, size=(h, w), mode="nearest")[0]
    return out
