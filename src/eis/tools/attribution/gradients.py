"""Plain-gradient methods: Saliency, Input x Gradient, Integrated Gradients, GradientShap.

They use autograd only (no hooks), so they are correct on any differentiable model, run on the caller's
model directly (gradients are taken with respect to a copy of the inputs, never accumulated into the
weights), and batch all their passes into one call.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import GradientShap, InputXGradient, IntegratedGradients, Saliency
from torch import nn

from eis.errors import EisError
from eis.tools.attribution.common import CaptumTool, noisy_baselines
from eis.tools.base import register_tool


@register_tool
class SaliencyTool(CaptumTool):
    """Gradient of the target score with respect to the input (Simonyan et al. 2014)."""

    name: ClassVar[str] = "saliency"
    summary: ClassVar[str] = "input gradient of the target score (absolute value by default)"
    abs: bool = True

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Saliency(model).attribute(inputs, target=target, abs=self.abs)


@register_tool
class InputXGradientTool(CaptumTool):
    """Input times its gradient (Shrikumar et al. 2016)."""

    name: ClassVar[str] = "input_x_gradient"
    summary: ClassVar[str] = "input times the input gradient"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return InputXGradient(model).attribute(inputs, target=target)


@register_tool
class IntegratedGradientsTool(CaptumTool):
    """Integrated Gradients from a black baseline (Sundararajan et al. 2017); maps sum to f(x) - f(0)."""

    name: ClassVar[str] = "integrated_gradients"
    summary: ClassVar[str] = "path integral of gradients from a black baseline"
    n_steps: int = 32
    method: str = "gausslegendre"
    internal_batch_size: int = 128  # images per forward+backward pass (at least the batch); big passes
    # fall out of CPU cache and run slower per image than a few medium ones

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_steps < 1:
            raise EisError(f"n_steps must be >= 1, got {self.n_steps}")
        ig = IntegratedGradients(model)
        return ig.attribute(
            inputs,
            baselines=0.0,
            target=target,
            n_steps=self.n_steps,
            method=self.method,
            internal_batch_size=max(self.internal_batch_size, inputs.shape[0]),
        )


@register_tool
class GradientShapTool(CaptumTool):
    """GradientShap (Lundberg & Lee 2017): expected gradients on noisy points between baselines and input."""

    name: ClassVar[str] = "gradient_shap"
    summary: ClassVar[str] = "expected gradients from noisy black baselines"
    stochastic: ClassVar[bool] = True
    n_samples: int = 16
    stdevs: float = 0.1
    n_baselines: int = 1
    baseline_noise: float = 0.0
    batch_size: int = 128  # images per forward+backward pass (samples x batch, at least one sample)
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_samples < 1 or self.n_baselines < 1 or self.batch_size < 1:
            raise EisError("gradient_shap needs n_samples >= 1, n_baselines >= 1 and batch_size >= 1")
        base = noisy_baselines(inputs, self.n_baselines, self.baseline_noise, self.seed)
        gs = GradientShap(model)
        # Captum draws all samples in one pass; passes of ~batch_size images run faster per image on CPU.
        # The mean over all samples is the size-weighted mean of the chunks' means.
        per_pass = max(1, self.batch_size // inputs.shape[0])
        sizes = [min(per_pass, self.n_samples - i) for i in range(0, self.n_samples, per_pass)]
        total = sum(
            gs.attribute(inputs, baselines=base, target=target, n_samples=k, stdevs=self.stdevs) * k
            for k in sizes
        )
        return total / self.n_samples
