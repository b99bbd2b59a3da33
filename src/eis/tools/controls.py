"""Controls: maps that know nothing of the model, run in every table so a tool must beat them.

A tool whose trigger localisation is no better than the edge magnitude of the image has shown nothing
about the model (Casper et al. 2023; Adebayo et al. 2018). Controls take the same call as attribution
tools, check their inputs the same way, and return maps shaped like the input (N, C, H, W); a map
defined per pixel is spread evenly over the channels (``spread_channels``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.tools.attribution.common import TargetLike, check_call, spread_channels
from eis.tools.base import AttributionTool, register_tool


class _Control(AttributionTool):
    control: ClassVar[bool] = True

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        check_call(model, inputs, target)
        return self._map(inputs.detach())

    def _map(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_tool
class EdgeDetector(_Control):
    """Sobel gradient magnitude of each input channel (replicate padding at the border)."""

    name: ClassVar[str] = "edge_detector"
    summary: ClassVar[str] = "control: Sobel edge magnitude of the image"

    def _map(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.to(torch.promote_types(inputs.dtype, torch.float32))
        n, c, h, w = x.shape
        sobel = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
        kx = torch.tensor(sobel, dtype=x.dtype, device=x.device)
        kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
        padded = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        g = F.conv2d(padded, kernels)  # (N*C, 2, H, W)
        return g.pow(2).sum(1).sqrt().reshape(n, c, h, w)


@register_tool
class RandomMap(_Control):
    """Uniform random values in [0, 1), seeded: the chance level of every metric."""

    name: ClassVar[str] = "random_map"
    summary: ClassVar[str] = "control: uniform random map"
    seed: int = 0

    def _map(self, inputs: torch.Tensor) -> torch.Tensor:
        n, c, h, w = inputs.shape
        gen = torch.Generator(device=inputs.device).manual_seed(self.seed)
        return spread_channels(torch.rand((n, h, w), generator=gen, device=inputs.device), c)


@register_tool
class BlankMap(_Control):
    """The same value everywhere: a map that ranks no pixel above another."""

    name: ClassVar[str] = "blank_map"
    summary: ClassVar[str] = "control: constant map"
    value: float = 1.0

    def _map(self, inputs: torch.Tensor) -> torch.Tensor:
        n, c, h, w = inputs.shape
        return spread_channels(torch.full((n, h, w), float(self.value), device=inputs.device), c)
