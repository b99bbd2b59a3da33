"""Guided Backprop and Deconvolution: ReLU-gradient rules, run on a call-site-split copy of the model.

Captum applies both rules with backward hooks on ``nn.ReLU`` modules; a ReLU called as a function or a
module reused in place would silently keep its plain gradient. Running on :func:`split_activations`'s copy
gives every ReLU call its own hook; tests compare against a hand-written reference.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn

from eis.tools.attribution.common import CaptumTool, shared_copy
from eis.tools.attribution.rewrite import split_activations
from eis.tools.base import register_tool


def relu_split_copy(model: nn.Module, method: str) -> nn.Module:
    """The cached, weight-synced copy of ``model`` with one ReLU module per call site."""
    return shared_copy(model, "split", lambda own: split_activations(own, method, copy_model=False))


@register_tool
class GuidedBackpropTool(CaptumTool):
    """Guided Backpropagation (Springenberg et al. 2015): only positive gradients pass through ReLUs."""

    name: ClassVar[str] = "guided_backprop"
    summary: ClassVar[str] = "gradient with negative signals zeroed at every ReLU"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return GuidedBackprop(relu_split_copy(model, self.name)).attribute(inputs, target=target)


@register_tool
class DeconvolutionTool(CaptumTool):
    """Deconvolution (Zeiler & Fergus 2014): ReLUs applied to the backward signal, ignoring the forward."""

    name: ClassVar[str] = "deconvolution"
    summary: ClassVar[str] = "backward pass with ReLU applied to the gradient signal"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Deconvolution(relu_split_copy(model, self.name)).attribute(inputs, target=target)
