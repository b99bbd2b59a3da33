"""Robust feature-level adversary (Casper et al. 2021): perturb a generator's internal activations so that
the patch it renders, pasted onto clean inputs, drives the target class under transformations.

Pixel-level adversarial patches tend to be high-frequency noise. Perturbing the generator's activations
instead keeps the patch on (near) the generator's image manifold, so what drives the class shows up as
image-like features an engineer can read. Here the generator is the dataset's small VAE decoder
(``eis.zoo.generators``): ``n_images`` latents are drawn from the prior, their internal activations
``h = head(z)`` are perturbed by a learned ``delta``, and ``tail(h + delta)`` is pasted at a random
position, scale and rotation onto clean inputs. Loss: cross-entropy toward the target + ``reg`` x the
mean squared perturbation (staying close to what the generator renders). Returned: the rendered patches
at full resolution.

Without ``dataset`` (a model of an unregistered domain), a generator is trained on the clean inputs
given and cached by their hash.
"""

from __future__ import annotations

import copy
import functools
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.cache import Prep
from eis.tools.base import register_tool
from eis.tools.synthesis.adversarial_patch import check_patch_settings
from eis.tools.synthesis.base import (
    SynthesisContext,
    SynthesisTool,
    affine_params,
    device_of,
    draw_inputs,
    paste,
)
from eis.zoo.generators import get_generator


@register_tool
class FeatureAdversary(SynthesisTool):
    """Patches a generator renders from perturbed internal activations (Casper et al. 2021)."""

    name: ClassVar[str] = "feature_adversary"
    summary: ClassVar[str] = "robust feature-level adversarial patches from a generator (Casper et al. 2021)"

    n_images: int = 10
    steps: int = 100
    lr: float = 0.05
    reg: float = 0.01  # weight of the mean squared activation perturbation
    size: float = 0.35  # patch side as a fraction of the image side
    scale_jitter: float = 0.2
    degrees: float = 20.0
    batch_size: int = 8  # clean inputs per patch per step
    generator_steps: int = 0  # 0: the default training length of eis.zoo.generators
    seed: int = 0

    def prepare(self, dataset: str | None) -> list[Prep]:
        """The dataset's generator (trained once, cached); none without a dataset (keyed by the inputs)."""
        if not dataset:
            return []
        steps = self.generator_steps or None
        key = f"generator {dataset}" + (f" ({steps} steps)" if steps else "")
        return [Prep(key, functools.partial(get_generator, dataset, steps=steps))]

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        check_patch_settings(self.name, self.size, self.scale_jitter, self.steps, self.batch_size)
        dev = device_of(model)
        x = clean_inputs.to(dev, torch.float32)
        steps = self.generator_steps or None
        if context.dataset:
            gen_model = get_generator(context.dataset, steps=steps)
        else:
            gen_model = get_generator(images=clean_inputs, steps=steps)
        if dev.type != "cpu":
            gen_model = copy.deepcopy(gen_model).to(dev)
        k = self.n_images
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(k, gen_model.latent, generator=gen).to(dev)
        with torch.no_grad():
            h0 = gen_model.head(z)
        delta = torch.zeros_like(h0).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=self.lr)
        n = k * self.batch_size
        tgt = torch.full((n,), target, device=dev, dtype=torch.long)
        lo, hi = self.size * (1 - self.scale_jitter), self.size * (1 + self.scale_jitter)
        rot = torch.pi * self.degrees / 180
        for _ in range(self.steps):
            xb = draw_inputs(x, n, gen)
            side, angle, centre = affine_params(n, gen, (lo, hi), rot, dev)
            patch = gen_model.tail(h0 + delta).repeat_interleave(self.batch_size, 0)
            ce = F.cross_entropy(model(paste(xb, patch, side, angle, centre)).float(), tgt)
            loss = ce + self.reg * delta.pow(2).mean()
            (grad,) = torch.autograd.grad(loss, [delta])
            opt.zero_grad(set_to_none=True)
            delta.grad = grad
            opt.step()
        with torch.no_grad():
            out = gen_model.tail(h0 + delta)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out.detach().to(clean_inputs.device)
