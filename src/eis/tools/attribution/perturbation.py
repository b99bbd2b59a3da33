"""Perturbation methods: they only call the model forward, on batches of perturbed copies.

Features are square superpixels (``cell`` x ``cell`` grid cells over all channels; ``cell=0`` picks an
8 x 8 grid, i.e. 2 px cells at 16x16 and 4 px at 32x32), removed by setting them to the black baseline.
``perturbations_per_eval`` sets how many perturbed copies of each image go through one forward pass.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import FeatureAblation, FeaturePermutation, KernelShap, Lime, Occlusion, ShapleyValueSampling
from torch import nn

from eis.errors import EisError, ToolRefusal
from eis.tools.attribution.common import CaptumTool, auto_cell, grid_mask
from eis.tools.base import register_tool


@dataclasses.dataclass
class _MaskTool(CaptumTool):
    cell: int = 0
    perturbations_per_eval: int = 64

    def mask(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.perturbations_per_eval < 1:
            raise EisError(f"perturbations_per_eval must be >= 1, got {self.perturbations_per_eval}")
        return grid_mask(inputs.shape[-2], inputs.shape[-1], auto_cell(self.cell, inputs), inputs.device)


@register_tool
class FeatureAblationTool(_MaskTool):
    """Drop in the target score when each superpixel is set to black."""

    name: ClassVar[str] = "feature_ablation"
    summary: ClassVar[str] = "score drop when each superpixel is blacked out"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fa = FeatureAblation(model)
        return fa.attribute(
            inputs, baselines=0.0, target=target, feature_mask=self.mask(inputs),
            perturbations_per_eval=self.perturbations_per_eval,
        )  # fmt: skip


@register_tool
class FeaturePermutationTool(_MaskTool):
    """Drop in the target score when each superpixel is shuffled across the images of the batch.

    Needs a batch of at least two images (it permutes between them): refuses batch size 1.
    """

    name: ClassVar[str] = "feature_permutation"
    summary: ClassVar[str] = "score drop when each superpixel is swapped between images of the batch"
    stochastic: ClassVar[bool] = True
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] < 2:
            raise ToolRefusal("feature_permutation shuffles features between images; needs a batch of >= 2")
        fp = FeaturePermutation(model)
        return fp.attribute(
            inputs, target=target, feature_mask=self.mask(inputs),
            perturbations_per_eval=self.perturbations_per_eval,
        )  # fmt: skip


@register_tool
class OcclusionTool(CaptumTool):
    """Score drop under a sliding black square (Zeiler & Fergus 2014)."""

    name: ClassVar[str] = "occlusion"
    summary: ClassVar[str] = "score drop under a sliding black square"
    window: int = 0  # 0 = a quarter of the image side
    stride: int = 0  # 0 = half the window
    perturbations_per_eval: int = 64

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        side = min(inputs.shape[-2:])
        window = self.window or max(1, side // 4)
        stride = self.stride or max(1, window // 2)
        if window > side or stride < 1 or self.perturbations_per_eval < 1:
            raise EisError(f"occlusion needs 1 <= window <= {side}, stride >= 1, perturbations_per_eval >= 1")
        c = inputs.shape[1]
        return Occlusion(model).attribute(
            inputs, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=0.0,
            target=target, perturbations_per_eval=self.perturbations_per_eval,
        )  # fmt: skip


@register_tool
class ShapleyValueSamplingTool(_MaskTool):
    """Shapley values of the superpixels, estimated from ``n_samples`` random orderings."""

    name: ClassVar[str] = "shapley_value_sampling"
    summary: ClassVar[str] = "sampled Shapley values of superpixels (black baseline)"
    stochastic: ClassVar[bool] = True
    n_samples: int = 4
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_samples < 1:
            raise EisError(f"n_samples must be >= 1, got {self.n_samples}")
        svs = ShapleyValueSampling(model)
        return svs.attribute(
            inputs, baselines=0.0, target=target, feature_mask=self.mask(inputs), n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval,
        )  # fmt: skip


@dataclasses.dataclass
class _SurrogateTool(_MaskTool):
    stochastic: ClassVar[bool] = True
    n_samples: int = 128
    seed: int = 0

    def _fit(self, explainer: Lime | KernelShap, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_samples < 2:
            raise EisError(f"n_samples must be >= 2, got {self.n_samples}")
        mask = self.mask(inputs)
        with warnings.catch_warnings():  # Captum warns that batches are fitted one example at a time
            warnings.simplefilter("ignore", UserWarning)
            return explainer.attribute(
                inputs, baselines=0.0, target=target, feature_mask=mask, n_samples=self.n_samples,
                perturbations_per_eval=self.perturbations_per_eval,
            )  # fmt: skip


@register_tool
class LimeTool(_SurrogateTool):
    """LIME (Ribeiro et al. 2016): a ridge surrogate fitted on random superpixel subsets.

    Ridge (as in the reference ``lime`` package) rather than Captum's default Lasso(alpha=0.01), which
    zeroes every coefficient when the model's scores move by less than about alpha.
    """

    name: ClassVar[str] = "lime"
    summary: ClassVar[str] = "ridge surrogate over random superpixel subsets"
    ridge_alpha: float = 1.0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        surrogate = SkLearnRidge(alpha=self.ridge_alpha)
        return self._fit(Lime(model, interpretable_model=surrogate), inputs, target)


@register_tool
class KernelShapTool(_SurrogateTool):
    """Kernel SHAP (Lundberg & Lee 2017): Shapley-kernel-weighted linear surrogate over superpixels."""

    name: ClassVar[str] = "kernel_shap"
    summary: ClassVar[str] = "Shapley-kernel linear surrogate over superpixels"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._fit(KernelShap(model), inputs, target)
