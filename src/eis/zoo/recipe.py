"""Options of the zoo's training loop beyond epochs, batch size and lr: optimiser, schedule, weight decay,
augmentation, the user's own training function (shadow models are trained the user's way), or fine-tuning a
cached clean base instead of training from scratch (:mod:`eis.zoo.implant`).

A spec's ``train`` table holds them only when set, so the ids of cases that use eis's defaults (Adam, a
one-cycle schedule, no augmentation) are what they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
AUGMENTS = ("flip", "crop")
RECIPE_FIELDS = ("optimizer", "schedule", "weight_decay", "augment", "trainer", "trainer_source", "finetune")
SGD_MOMENTUM = 0.9
CROP_PAD = 0.125  # random crops shift by up to this share of the side (4 px at 32 px), zero padding


def check_recipe(train: dict[str, Any]) -> None:
    """One-line errors for bad recipe options in a spec's ``train`` table."""
    for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if key in train and train[key] not in valid:
            raise EisError(f"unknown {key} {train[key]!r}; valid: {', '.join(valid)}")
    aug = train.get("augment", [])
    if not isinstance(aug, list | tuple) or any(a not in AUGMENTS for a in aug):
        raise EisError(f"augment must be a list drawn from {', '.join(AUGMENTS)}; got {aug!r}")
    wd = train.get("weight_decay", 0.0)
    if not isinstance(wd, int | float) or wd < 0:
        raise EisError(f"weight_decay must be a number >= 0; got {wd!r}")
    if "finetune" in train:
        from eis.zoo.implant import check_finetune

        check_finetune(train["finetune"])
    if "trainer" in train and (not isinstance(train["trainer"], str) or ":" not in train["trainer"]):
        raise EisError(
            f"trainer must read package.module:function or file.py:function; got {train['trainer']!r}"
        )


def optimizer(params: Iterable[nn.Parameter], settings: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = settings.get("optimizer", "adam"), settings["lr"], settings.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


def schedule(opt: torch.optim.Optimizer, settings: dict[str, Any], total_steps: int) -> Any:
    name = settings.get("schedule", "onecycle")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], total_steps=total_steps)


def augment(x: torch.Tensor, settings: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifted crops of a batch, drawn from ``gen`` (CPU) for determinism."""
    kinds = settings.get("augment") or ()
    if not kinds:
        return x
    n, _, h, w = x.shape
    if "flip" in kinds:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if "crop" in kinds:
        pad = max(1, round(CROP_PAD * h))
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[idx_n, idx_c, rows, cols]
    return x


def run_user_trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any]) -> None:
    """Train ``model`` with the user's function ``fn(model, dataset)``; its errors become one line."""
    from torch.utils.data import TensorDataset

    from eis.usermodel import load_factory

    fn = load_factory(settings["trainer"])
    model.train()
    try:
        fn(model, TensorDataset(x, y))
    except Exception as exc:  # the user's code may raise anything: name it in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EisError(
            f"the training function {settings['trainer']!r} raised {type(exc).__name__}: {first}"
        ) from None
