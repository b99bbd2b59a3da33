"""DeepLift, DeepLiftShap and LRP: rule-based backward passes, run on a call-site-split copy of the model.

All three rely on Captum module hooks, so they run on :func:`split_activations`'s private copy and refuse
models holding operations they have no rule for. Their completeness is tested: DeepLift maps sum to
f(x) - f(baseline); LRP-epsilon equals input x gradient on bias-free ReLU nets.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import LRP, DeepLift, DeepLiftShap
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from eis.errors import EisError
from eis.tools.attribution.common import CaptumTool, noisy_baselines, synced_copy
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
_DEEPLIFT_MODULES = (*LINEAR_MODULES, MaxPoolAsReLU, *(a for a in ACTIVATIONS if a is not nn.MaxPool2d))


def deeplift_copy(model: nn.Module, method: str) -> nn.Module:
    """The cached, weight-synced model copy DeepLift-style methods run on; refuses unsupported ops."""

    def build(own: nn.Module) -> nn.Module:
        gm = maxpools_as_relus(split_activations(own, method, copy_model=False))
        check_ops(gm, method, _DEEPLIFT_MODULES)
        return gm

    return synced_copy(model, "deeplift", build)


@register_tool
class DeepLiftTool(CaptumTool):
    """DeepLift (rescale rule) against a black baseline (Shrikumar et al. 2017)."""

    name: ClassVar[str] = "deeplift"
    summary: ClassVar[str] = "DeepLift rescale rule vs a black baseline; maps sum to f(x) - f(0)"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net = deeplift_copy(model, self.name)
        return DeepLift(net).attribute(inputs, baselines=0.0, target=target)


@register_tool
class DeepLiftShapTool(CaptumTool):
    """DeepLiftShap: DeepLift averaged over a distribution of baselines (black + Gaussian noise)."""

    name: ClassVar[str] = "deeplift_shap"
    summary: ClassVar[str] = "DeepLift averaged over noisy black baselines; sums to f(x) - mean f(baselines)"
    stochastic: ClassVar[bool] = True
    n_baselines: int = 8
    baseline_noise: float = 0.1
    baseline_chunk: int = 2  # baselines per Captum call: smaller (input x baseline) batches run faster on CPU
    seed: int = 0

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_baselines < 2:
            raise EisError(f"deeplift_shap needs n_baselines >= 2 (a distribution), got {self.n_baselines}")
        if self.baseline_chunk < 2:
            raise EisError(f"deeplift_shap needs baseline_chunk >= 2, got {self.baseline_chunk}")
        net = deeplift_copy(model, self.name)
        base = noisy_baselines(inputs, self.n_baselines, self.baseline_noise, self.seed)
        # the mean over all baselines, as a size-weighted mean of chunk means (every chunk has >= 2)
        chunks = torch.tensor_split(base, max(1, len(base) // self.baseline_chunk))
        total = sum(DeepLiftShap(net).attribute(inputs, baselines=c, target=target) * len(c) for c in chunks)
        return total / len(base)


@register_tool
class LRPTool(CaptumTool):
    """Layer-wise relevance propagation, epsilon rule (Bach et al. 2015), via Captum.

    Refuses models with residual additions or BatchNorm: Captum's LRP has no conserving rule for them
    (it would pass the whole relevance down both branches of an addition).
    """

    name: ClassVar[str] = "lrp"
    summary: ClassVar[str] = "LRP-epsilon; refuses residual additions and BatchNorm (no Captum rule)"
    epsilon: float = 1e-9

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net = synced_copy(model, "lrp", lambda own: _lrp_copy(own, self.name))
        for mod in net.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                mod.rule = EpsilonRule(epsilon=self.epsilon)
        return LRP(net).attribute(inputs, target=target)


def _lrp_copy(own: nn.Module, method: str) -> nn.Module:
    net = drop_reshape_modules(split_activations(own, method, copy_model=False))
    allowed = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.ReLU, nn.Tanh,
               nn.Dropout)  # fmt: skip
    check_ops(net, method, allowed, residual=False)  # BatchNorm is not in ``allowed``: refused
    return net
