"""Pruning repairs: fine-pruning (Liu et al. 2018), attribution-guided pruning, and random pruning (control).

All three prune channels of the feature map the classifier head reads (``eis.tools.repair.units``) and then
fine-tune on the clean budget with the pruned channels held at zero; they differ only in which channels go:

- ``fine_pruning``: the channels least active on clean data first (a backdoor hides in units that clean
  inputs leave dormant), as many as keep the budget's clean accuracy within ``max_acc_drop`` of the start.
- ``attribution_prune``: the channels that gradient x activation (Captum's ``LayerGradientXActivation``)
  credits most for the recovered target on inputs stamped with Neural Cleanse's *recovered* trigger, over
  the same inputs unstamped; ``fraction`` of the channels.
- ``random_prune``: the same ``fraction`` drawn at random (the control for "does the choice matter").
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from eis.tools.base import register_tool
from eis.tools.detection.base import Detection, DetectionTool
from eis.tools.repair.base import FLAG_THRESHOLD, Repaired, flagged_trigger, neural_cleanse
from eis.tools.repair.finetune import _FinetuneSettings
from eis.tools.repair.units import channel_activations, feature_map


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Share of ``x`` that ``model`` classifies as ``y`` (batched, no gradients)."""
    with torch.no_grad():
        hits = sum(
            int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, x.shape[0], batch_size)
        )
    return hits / max(1, x.shape[0])


@register_tool
class FinePruning(_FinetuneSettings):
    """Fine-pruning: prune clean-dormant feature channels while clean accuracy holds, then fine-tune."""

    name: ClassVar[str] = "fine_pruning"
    summary: ClassVar[str] = "prune channels dormant on clean data, then fine-tune (Liu et al. 2018)"

    max_acc_drop: float = 0.05
    max_fraction: float = 0.9

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        fmap = feature_map(model, x)
        act = channel_activations(model, fmap, x, 256).mean(0).cpu()
        order = sorted(range(fmap.channels), key=lambda c: (float(act[c]), c))  # least active first
        start = accuracy(model, x, y)
        w0 = fmap.head.weight.detach().clone()
        pruned: list[int] = []
        with torch.no_grad():
            for k in range(1, int(self.max_fraction * fmap.channels) + 1):
                fmap.head.weight.copy_(w0 * fmap.keep_mask(order[:k]))
                if accuracy(model, x, y) < start - self.max_acc_drop:
                    break
                pruned = order[:k]
            fmap.head.weight.copy_(w0)
        keep = fmap.prune(pruned)
        steps = self._finetune(model, x, y, keep=keep)
        return Repaired(
            model, {"pruned": sorted(pruned), "fraction": len(pruned) / fmap.channels, "steps": steps}
        )


@dataclasses.dataclass
class _FractionPruning(_FinetuneSettings):
    fraction: float = 0.25

    def _count(self, channels: int) -> int:
        return max(1, round(self.fraction * channels))


@register_tool
class RandomPruning(_FractionPruning):
    """Control: prune a random ``fraction`` of the feature channels, then fine-tune like the others."""

    name: ClassVar[str] = "random_prune"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "control: prune random feature channels (same sparsity), then fine-tune"

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        fmap = feature_map(model, x)
        gen = torch.Generator().manual_seed(self.seed)
        pruned = sorted(
            int(c) for c in torch.randperm(fmap.channels, generator=gen)[: self._count(fmap.channels)]
        )
        keep = fmap.prune(pruned)
        steps = self._finetune(model, x, y, keep=keep)
        return Repaired(model, {"pruned": pruned, "fraction": len(pruned) / fmap.channels, "steps": steps})


@register_tool
class AttributionPruning(_FractionPruning):
    """Prune the feature channels gradient x activation ranks highest for the recovered trigger, fine-tune."""

    name: ClassVar[str] = "attribution_prune"
    summary: ClassVar[str] = (
        "prune channels that attribution credits for Neural Cleanse's recovered trigger, then fine-tune"
    )

    nc_steps: int = 100
    threshold: float = FLAG_THRESHOLD

    def detector_tool(self) -> DetectionTool:
        return neural_cleanse(self.nc_steps, self.seed)

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        from captum.attr import LayerGradientXActivation

        det = flagged_trigger(detected, self.name, self.threshold)
        fmap = feature_map(model, x)
        stamped = det.stamp(x)
        attr = LayerGradientXActivation(model, fmap.module)
        target = int(det.target)  # type: ignore[arg-type]
        credit = torch.zeros(fmap.channels, device=x.device)
        for i in range(0, x.shape[0], self.batch_size):
            on = attr.attribute(stamped[i : i + self.batch_size], target=target).detach()
            off = attr.attribute(x[i : i + self.batch_size], target=target).detach()
            credit += (on - off).flatten(2).sum(2).sum(0)
        ranked = sorted(range(fmap.channels), key=lambda c: (-float(credit[c]), c))
        pruned = sorted(ranked[: self._count(fmap.channels)])
        keep = fmap.prune(pruned)
        steps = self._finetune(model, x, y, keep=keep)
        return Repaired(
            model,
            {"pruned": pruned, "fraction": len(pruned) / fmap.channels, "steps": steps, "target": target},
        )
