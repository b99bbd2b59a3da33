"""Fine-tuning on the clean budget, shared by every method that ends with it, and the two plain baselines.

The loop is plain SGD with momentum (as BackdoorBench's fine-tuning defences use), in mini-batches drawn
with a seeded generator. The model stays in eval mode while it trains: with a budget of a few dozen
images, re-estimating BatchNorm statistics from it would move the model more than the repair does.
``keep`` holds (parameter, 0/1 mask) pairs re-applied after every step, so that units a method pruned stay
pruned. ``stamp`` (with ``stamp_fraction``) replaces a seeded share of each batch by stamped copies that
keep their true labels: Neural Cleanse's unlearning. Gradients are clipped to ``max_grad_norm``: stamped
inputs the model confidently sends to the target give large gradients, which made the zoo's resnet diverge
to one class without clipping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.tools.base import register_tool
from eis.tools.detection.base import Detection
from eis.tools.repair.base import Repaired, RepairTool


def finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    keep: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    stamp: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stamp_fraction: float = 0.0,
    max_grad_norm: float = 5.0,
) -> int:
    """Fine-tune ``model`` in place on ``(x, y)``; returns the number of optimiser steps taken."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    n, steps = x.shape[0], 0
    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(x.device)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                xb, yb = x[idx], y[idx]
                if stamp is not None and stamp_fraction > 0:
                    pick = (torch.rand(idx.shape[0], generator=gen) < stamp_fraction).to(x.device)
                    xb = torch.where(pick[:, None, None, None], stamp(xb), xb)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()
                steps += 1
                with torch.no_grad():
                    for p, mask in keep:
                        p.mul_(mask)
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return steps


@dataclasses.dataclass
class _FinetuneSettings(RepairTool):
    """Fine-tuning settings shared by the methods that end with fine-tuning."""

    epochs: int = 20
    lr: float = 0.003
    batch_size: int = 32
    max_grad_norm: float = 5.0
    seed: int = 0

    def _finetune(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: object) -> int:
        return finetune(
            model,
            x,
            y,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            max_grad_norm=self.max_grad_norm,
            **kw,
        )


@register_tool
class CleanFinetune(_FinetuneSettings):
    """Control: fine-tune every weight on the clean budget (a method only works where it beats this)."""

    name: ClassVar[str] = "finetune"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "control: fine-tune on the clean budget"

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        steps = self._finetune(model, x, y)
        return Repaired(model, {"steps": steps})


@register_tool
class NoOp(RepairTool):
    """Control: return the model unchanged (what every number is compared with)."""

    name: ClassVar[str] = "noop"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "control: leave the model as it is"

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        return Repaired(model, {})
