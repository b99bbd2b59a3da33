"""SmoothGrad and VarGrad: mean and variance of gradients over noisy copies of the input (NoiseTunnel)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from eis.errors import EisError
from eis.tools.attribution.common import CaptumTool
from eis.tools.base import register_tool


@dataclasses.dataclass
class _NoiseTool(CaptumTool):
    stochastic: ClassVar[bool] = True
    nt_type: ClassVar[str] = ""
    n_samples: int = 16
    stdev: float = 0.15  # noise std in input units (images are in [0, 1])
    batch_size: int = 128  # images per forward+backward pass (noisy copies x batch, at least one copy)
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_samples < 1 or self.stdev < 0:
            raise EisError(f"{self.name} needs n_samples >= 1 and stdev >= 0")
        nt = NoiseTunnel(Saliency(model))
        return nt.attribute(
            inputs,
            nt_type=self.nt_type,
            nt_samples=self.n_samples,
            nt_samples_batch_size=max(1, self.batch_size // inputs.shape[0]),
            stdevs=self.stdev,
            target=target,
            abs=False,
        )


@register_tool
class SmoothGradTool(_NoiseTool):
    """SmoothGrad (Smilkov et al. 2017): input gradient averaged over Gaussian-noised inputs."""

    name: ClassVar[str] = "smoothgrad"
    summary: ClassVar[str] = "gradient averaged over noisy inputs"
    nt_type: ClassVar[str] = "smoothgrad"


@register_tool
class VarGradTool(_NoiseTool):
    """VarGrad (Adebayo et al. 2018): variance of the input gradient over Gaussian-noised inputs."""

    name: ClassVar[str] = "vargrad"
    summary: ClassVar[str] = "variance of gradients over noisy inputs"
    nt_type: ClassVar[str] = "vargrad"
