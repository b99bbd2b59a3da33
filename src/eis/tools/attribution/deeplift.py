"""DeepLift, DeepLiftShap and LRP: rule-based backward passes, run on a call-site-split copy of the model.

The rules are custom autograd functions (:mod:`eis.tools.attribution.rules`) placed in a private copy of
the model in which every activation call site is its own module; models holding operations with no rule
are refused. Completeness is tested: DeepLift maps sum to f(x) - f(baseline); LRP-epsilon equals input x
gradient on bias-free ReLU nets; both equal Captum's implementations to float precision.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.attribution import rules
from eis.tools.attribution.common import CaptumTool, noisy_baselines, shared_copy
from eis.tools.attribution.rewrite import (
    ACTIVATIONS,
    LINEAR_MODULES,
    MaxPoolAsReLU,
    check_ops,
    drop_reshape_modules,
    maxpools_as_relus,
    split_activations,
)
from eis.tools.base import register_tool

# Max pools are rewritten as ReLU trees (exact summation-to-delta); any other pool left over is refused.
_RESCALED = tuple(a for a in ACTIVATIONS if a not in (nn.MaxPool1d, nn.MaxPool2d))
_DEEPLIFT_MODULES = (*LINEAR_MODULES, MaxPoolAsReLU, *_RESCALED)


def deeplift_copy(model: nn.Module, method: str) -> nn.Module:
    """The cached, weight-synced model copy DeepLift-style methods run on; refuses unsupported ops."""

    def build(own: nn.Module) -> nn.Module:
        gm = maxpools_as_relus(split_activations(own, method, copy_model=False))
        check_ops(gm, method, _DEEPLIFT_MODULES)
        return rules.with_rescale(gm, _RESCALED)

    return shared_copy(model, "deeplift", build)


@register_tool
class DeepLiftTool(CaptumTool):
    """DeepLift (rescale rule) against a black baseline (Shrikumar et al. 2017)."""

    name: ClassVar[str] = "deeplift"
    summary: ClassVar[str] = "DeepLift rescale rule vs a black baseline; maps sum to f(x) - f(0)"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net = deeplift_copy(model, self.name)
        return rules.deeplift(net, inputs, torch.zeros_like(inputs[:1]), target)[0]


@register_tool
class DeepLiftShapTool(CaptumTool):
    """DeepLiftShap: DeepLift averaged over a distribution of baselines (black + Gaussian noise)."""

    name: ClassVar[str] = "deeplift_shap"
    summary: ClassVar[str] = "DeepLift averaged over noisy black baselines; sums to f(x) - mean f(baselines)"
    stochastic: ClassVar[bool] = True
    n_baselines: int = 8
    baseline_noise: float = 0.1
    batch_size: int = 64  # images (inputs x baselines) per pass; larger batches run slower per image on CPU
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_baselines < 2:
            raise EisError(f"deeplift_shap needs n_baselines >= 2 (a distribution), got {self.n_baselines}")
        if self.batch_size < 1:
            raise EisError(f"deeplift_shap needs batch_size >= 1, got {self.batch_size}")
        net = deeplift_copy(model, self.name)
        base = noisy_baselines(inputs, self.n_baselines, self.baseline_noise, self.seed)
        per_pass = max(1, self.batch_size // len(inputs))  # baselines run together against all inputs
        total = sum(rules.deeplift(net, inputs, c, target).sum(0) for c in base.split(per_pass))
        return total / len(base)


@register_tool
class LRPTool(CaptumTool):
    """Layer-wise relevance propagation, epsilon rule (Bach et al. 2015), with Captum's layer rules.

    Refuses models with residual additions or BatchNorm, as Captum does: the epsilon rule has no
    conserving treatment of them here (it would pass the whole relevance down both branches of an addition).
    """

    name: ClassVar[str] = "lrp"
    summary: ClassVar[str] = "LRP-epsilon; refuses residual additions and BatchNorm (no conserving rule)"
    epsilon: float = 1e-9

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.epsilon > 0:
            raise EisError(f"lrp needs epsilon > 0, got {self.epsilon}")
        net = shared_copy(model, ("lrp", self.epsilon), lambda own: _lrp_copy(own, self.name, self.epsilon))
        return rules.lrp(net, inputs, target)


_LRP_LINEAR = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_LRP_ACTIVATIONS = (nn.ReLU, nn.Tanh)


def _lrp_copy(own: nn.Module, method: str, epsilon: float) -> nn.Module:
    net = drop_reshape_modules(split_activations(own, method, copy_model=False))
    check_ops(net, method, (*_LRP_LINEAR, *_LRP_ACTIVATIONS, nn.Dropout), residual=False)  # no BatchNorm
    return rules.with_epsilon_rule(net, _LRP_LINEAR, _LRP_ACTIVATIONS, epsilon)
