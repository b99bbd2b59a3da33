"""Adversarial patch (Brown et al. 2017): a universal patch that sends any input it is pasted on to the
target class, optimised over clean inputs with random position, scale and rotation (expectation over
transformations).

``n_images`` patches are optimised at once from different random starts, each on its own draw of clean
inputs (one batch of ``n_images * batch_size`` pasted images per step). A patch has ``size`` x the image
side in pixels (the model sees it at that resolution); it is returned upsampled (nearest) to the image
size so that it can be shown beside the other tools' images.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.synthesis.base import (
    SynthesisContext,
    SynthesisTool,
    affine_params,
    device_of,
    draw_inputs,
    paste,
    upsample,
)


def check_patch_settings(name: str, size: float, scale_jitter: float, steps: int, batch_size: int) -> None:
    if not 0 < size <= 1 or not 0 <= scale_jitter < 1:
        raise EisError(
            f"{name}: size must be in (0, 1] and scale_jitter in [0, 1); got {size}, {scale_jitter}"
        )
    if steps < 0 or batch_size < 1:
        raise EisError(f"{name}: steps must be >= 0 and batch_size >= 1; got {steps}, {batch_size}")


@register_tool
class AdversarialPatch(SynthesisTool):
    """Universal adversarial patch toward the target class (Brown et al. 2017)."""

    name: ClassVar[str] = "adversarial_patch"
    summary: ClassVar[str] = "universal adversarial patch toward the target (Brown et al. 2017)"

    n_images: int = 10
    steps: int = 100
    lr: float = 0.1
    size: float = 0.3  # patch side as a fraction of the image side
    scale_jitter: float = 0.2  # side drawn from size * [1 - j, 1 + j]
    degrees: float = 20.0
    batch_size: int = 8  # clean inputs per patch per step
    seed: int = 0

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        check_patch_settings(self.name, self.size, self.scale_jitter, self.steps, self.batch_size)
        dev = device_of(model)
        x = clean_inputs.to(dev, torch.float32)
        k, (c, h, w) = self.n_images, x.shape[1:]
        p = max(2, round(self.size * h))
        gen = torch.Generator().manual_seed(self.seed)
        param = (torch.randn(k, c, p, p, generator=gen) * 0.5).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([param], lr=self.lr)
        n = k * self.batch_size
        tgt = torch.full((n,), target, device=dev, dtype=torch.long)
        lo, hi = self.size * (1 - self.scale_jitter), self.size * (1 + self.scale_jitter)
        rot = torch.pi * self.degrees / 180
        for _ in range(self.steps):
            xb = draw_inputs(x, n, gen)
            side, angle, centre = affine_params(n, gen, (lo, hi), rot, dev)
            patch = torch.sigmoid(param).repeat_interleave(self.batch_size, 0)
            loss = F.cross_entropy(model(paste(xb, patch, side, angle, centre)).float(), tgt)
            (grad,) = torch.autograd.grad(loss, [param])
            opt.zero_grad(set_to_none=True)
            param.grad = grad
            opt.step()
        with torch.no_grad():
            return upsample(torch.sigmoid(param), (h, w)).detach().to(clean_inputs.device)
