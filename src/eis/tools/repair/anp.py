"""Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021).

Backdoored neurons are the ones whose small perturbation most easily flips the model. Every neuron k (an
output channel of each BatchNorm layer, or of each conv layer in a net without BatchNorm) gets a mask
m_k in [0, 1] (start 1) and, during optimisation, perturbations delta_k, xi_k in [-eps, eps] of its scale and
bias: the layer's output y_k = s_k + b_k (s: the scaled part, b: the bias) becomes
(m_k + delta_k) * s_k + (1 + xi_k) * b_k. Each step, on a batch of the clean budget:

1. draw delta, xi uniformly in [-eps, eps] and take ``anp_steps`` signed-gradient ascent steps of size
   eps / anp_steps on the cross-entropy (the adversarial neuron perturbation), clipped to [-eps, eps];
2. take one SGD step (lr 0.2, momentum 0.9) on the masks for
   alpha * CE(masked model) + (1 - alpha) * CE(masked and perturbed model), then clip masks to [0, 1].

Neurons whose mask ends below ``prune_threshold`` are pruned by zeroing their scale (the layer's weight
for that channel; the bias stays, as in the authors' code), lowest mask first and only as many as keep
the budget's clean accuracy within ``max_acc_drop`` of the start: the authors choose the pruning level by
clean validation accuracy too, and on the zoo's resnet 100 steps leave so many masks below 0.2 that
pruning them all left 10% accuracy. No fine-tuning follows. The other defaults are the paper's (eps 0.4,
alpha 0.2, one ascent step, threshold 0.2, mask lr 0.2); the step count is scaled to the budget.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.tools.base import register_tool
from eis.tools.detection.base import Detection
from eis.tools.repair.base import Repaired, RepairTool
from eis.tools.repair.pruning import accuracy


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """ANP's neurons: every BatchNorm layer's channels, or every conv layer's where there is no BatchNorm."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns:
        return [(n, m) for n, m in bns if m.affine]
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


class _Perturbation:
    """Forward hooks applying (m + delta) to a layer's scaled part and (1 + xi) to its bias, per channel."""

    def __init__(self, layers: list[tuple[str, nn.Module]], eps: float, device: torch.device) -> None:
        self.layers = layers
        self.eps = eps
        self.noisy = False
        self.masks = [torch.ones(_channels(m), device=device, requires_grad=True) for _, m in layers]
        self.delta = [torch.zeros(_channels(m), device=device, requires_grad=True) for _, m in layers]
        self.xi = [torch.zeros(_channels(m), device=device, requires_grad=True) for _, m in layers]
        self.handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):  # noqa: ANN202 - a forward hook
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (out.ndim - 2)
            scale = self.masks[i] + self.delta[i] if self.noisy else self.masks[i]
            out = out * scale.view(shape)
            bias = getattr(mod, "bias", None)
            if bias is None:
                return out
            b = bias.view(shape)  # the bias is not scaled by the mask, only perturbed by xi
            return out + b * (1 - scale.view(shape)) + (b * self.xi[i].view(shape) if self.noisy else 0)

        return hook

    def reset_noise(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            for t in (*self.delta, *self.xi):
                t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1).to(t.device) * self.eps)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _channels(m: nn.Module) -> int:
    return int(m.weight.shape[0])


@register_tool
class ANP(RepairTool):
    """Adversarial Neuron Pruning: prune the neurons whose perturbation most easily breaks the model."""

    name: ClassVar[str] = "anp"
    summary: ClassVar[str] = "prune neurons most sensitive to adversarial perturbation (Wu & Wang 2021)"

    steps: int = 60
    eps: float = 0.4
    alpha: float = 0.2
    anp_steps: int = 1
    mask_lr: float = 0.2
    prune_threshold: float = 0.2
    max_acc_drop: float = 0.05
    batch_size: int = 32
    seed: int = 0

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        layers = neuron_layers(model)
        pert = _Perturbation(layers, self.eps, x.device)
        gen = torch.Generator().manual_seed(self.seed)
        mask_opt = torch.optim.SGD(pert.masks, lr=self.mask_lr, momentum=0.9)
        noise = [*pert.delta, *pert.xi]
        noise_opt = torch.optim.SGD(noise, lr=self.eps / max(1, self.anp_steps))
        n, b = x.shape[0], min(self.batch_size, x.shape[0])
        try:
            for _ in range(self.steps):
                sel = torch.randint(0, n, (b,), generator=gen).to(x.device)
                xb, yb = x[sel], y[sel]
                if self.eps > 0:
                    pert.reset_noise(gen)
                    pert.noisy = True
                    for _ in range(self.anp_steps):
                        noise_opt.zero_grad(set_to_none=True)
                        (-F.cross_entropy(model(xb), yb)).backward()
                        with torch.no_grad():
                            for t in noise:
                                t.grad = torch.sign(t.grad)
                        noise_opt.step()
                        with torch.no_grad():
                            for t in noise:
                                t.clamp_(-self.eps, self.eps)
                mask_opt.zero_grad(set_to_none=True)
                loss_rob = F.cross_entropy(model(xb), yb) if self.eps > 0 else 0.0
                pert.noisy = False
                loss = self.alpha * F.cross_entropy(model(xb), yb) + (1 - self.alpha) * loss_rob
                loss.backward()
                mask_opt.step()
                with torch.no_grad():
                    for m in pert.masks:
                        m.clamp_(0, 1)
        finally:
            pert.remove()
        pruned = self._prune(model, layers, pert.masks, x, y)
        total = sum(_channels(m) for _, m in layers)
        names: dict[str, list[int]] = {}
        for li, c in pruned:
            names.setdefault(layers[li][0], []).append(c)
        return Repaired(model, {"pruned": names, "fraction": len(pruned) / max(1, total)})

    def _prune(
        self,
        model: nn.Module,
        layers: list[tuple[str, nn.Module]],
        masks: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> list[tuple[int, int]]:
        """Zero the scale of the neurons with mask < threshold, lowest first, as many as keep the budget's
        clean accuracy within ``max_acc_drop`` (binary search over the count); return (layer, channel)s."""
        cands = sorted(
            ((float(v), li, c) for li, m in enumerate(masks) for c, v in enumerate(m.detach().cpu())),
            key=lambda t: t[0],
        )
        cands = [(li, c) for v, li, c in cands if v < self.prune_threshold]
        weights = [mod.weight.detach().clone() for _, mod in layers]

        def apply(k: int) -> float:
            with torch.no_grad():
                for (_, mod), w in zip(layers, weights, strict=True):
                    mod.weight.copy_(w)
                for li, c in cands[:k]:
                    layers[li][1].weight[c] = 0
            return accuracy(model, x, y)

        floor = apply(0) - self.max_acc_drop
        lo, hi = 0, len(cands)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if apply(mid) >= floor:
                lo = mid
            else:
                hi = mid - 1
        apply(lo)
        return cands[:lo]
