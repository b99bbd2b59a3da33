"""How shadow models are trained and which flaws are planted in them: the recipe and its draws.

A shadow population is N clean and N flawed models of the user's architecture trained on the user's data.
Pair i holds one clean and one flawed member with the same training settings; every flawed member draws
its flaw kind (in turn over the kinds that fit the data's shape), its target and trigger, and its
**poisoning strength**: poison rate, trigger size and opacity from ranges, so that the records say how a
detector does across strengths, not at one. Pairs alternate between two folds, ``a`` and ``b``: learned
detectors (MNTD, weight statistics) fit on one fold and are scored on the other (two-fold cross-fitting),
so every shadow is scored by every detector.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any

from eis.errors import EisError
from eis.zoo.recipe import AUGMENTS, OPTIMIZERS, SCHEDULES

MIN_PATCH = 4  # pixels: the zoo's smallest patch side (a 3 px pattern barely has a shape)

KINDS = ("patch", "patch_random", "blend", "warp", "natural", "style")  # patch_random: anywhere in the image


@dataclasses.dataclass(frozen=True)
class ShadowRecipe:
    """Settings of a shadow population. Defaults suit small image classifiers trained from scratch.

    shadows: N (N clean + N flawed); epochs, batch_size, lr, optimizer, schedule, weight_decay, augment:
    eis's training loop (``eis.zoo.train.fit``); trainer: the user's own training function instead
    (``module:fn`` or ``file.py:fn``, called as ``fn(model, dataset)`` with a ``TensorDataset`` that eis has
    already poisoned for flawed shadows); kinds: flaw kinds to plant (those that do not fit the data are
    left out); poison_rate, trigger_size (share of the image side), opacity: ranges the strengths are
    drawn from; evasive: train every shadow with the evasive recipe (patch, blend and style only);
    tolerance: a shadow's clean accuracy must be at least the user's model's minus this (rounded down to
    a step of 0.02, so that checkpoints of close accuracy share one calibration); asr_bar: a
    flawed shadow's attack success rate bar; seed: the draws.
    """

    shadows: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    schedule: str = "onecycle"
    weight_decay: float = 0.0
    augment: tuple[str, ...] = ()
    trainer: str | None = None
    kinds: tuple[str, ...] = KINDS
    poison_rate: tuple[float, float] = (0.05, 0.2)
    trigger_size: tuple[float, float] = (0.12, 0.25)
    opacity: tuple[float, float] = (0.15, 0.3)
    evasive: bool = False
    tolerance: float = 0.05
    asr_bar: float = 0.9
    seed: int = 0

    def validated(self) -> ShadowRecipe:
        """One-line errors naming the bad setting and what is valid."""
        if not isinstance(self.shadows, int) or self.shadows < 2:
            raise EisError(f"shadows must be an integer >= 2 (N clean + N flawed); got {self.shadows!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise EisError(
                f"shadow training needs epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, "
                f"{self.batch_size}, {self.lr}"
            )
        for what, value, valid in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
        ):
            if value not in valid:
                raise EisError(f"unknown shadow {what} {value!r}; valid: {', '.join(valid)}")
        for a in self.augment:
            if a not in AUGMENTS:
                raise EisError(f"unknown augmentation {a!r}; valid: {', '.join(AUGMENTS)}")
        for k in self.kinds:
            if k not in KINDS:
                raise EisError(f"unknown shadow flaw kind {k!r}; valid: {', '.join(KINDS)}")
        if not self.kinds:
            raise EisError(f"shadows need at least one flaw kind; valid: {', '.join(KINDS)}")
        for what, (lo, hi), top in (
            ("poison_rate", self.poison_rate, 0.5),
            ("trigger_size", self.trigger_size, 0.5),
            ("opacity", self.opacity, 1.0),
        ):
            if not 0 < lo <= hi <= top:
                raise EisError(f"shadow {what} range must satisfy 0 < low <= high <= {top}; got [{lo}, {hi}]")
        if not 0 <= self.tolerance < 1 or not 0 < self.asr_bar <= 1:
            raise EisError(
                f"need 0 <= tolerance < 1 and 0 < asr_bar <= 1; got {self.tolerance}, {self.asr_bar}"
            )
        return self

    def train_settings(self) -> dict[str, Any]:
        """The zoo spec's ``train`` table (only what differs from eis's loop enters, so ids stay short)."""
        out: dict[str, Any] = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        if self.optimizer != "adam":
            out["optimizer"] = self.optimizer
        if self.schedule != "onecycle":
            out["schedule"] = self.schedule
        if self.weight_decay:
            out["weight_decay"] = self.weight_decay
        if self.augment:
            out["augment"] = sorted(self.augment)
        if self.trainer:
            from eis.shadows.setup import source_of

            out["trainer"] = self.trainer
            out["trainer_source"] = hashlib.sha256(source_of(self.trainer).encode()).hexdigest()[:12]
        return out

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def fitting_kinds(recipe: ShadowRecipe, num_classes: int, channels: int, size: int) -> list[str]:
    """The recipe's kinds that can be planted in data of this shape (and trained evasively, if asked)."""
    from eis.zoo.flaws import make_flaw

    out = []
    for kind in recipe.kinds:
        flaw = draw_flaw(kind, random.Random(0), recipe, num_classes, size)
        if recipe.evasive:
            flaw["evasive"] = True
        try:
            make_flaw(flaw).check(num_classes, channels, size)
        except EisError:
            continue
        out.append(kind)
    return out


def draw_flaw(
    kind: str, rng: random.Random, recipe: ShadowRecipe, num_classes: int, size: int
) -> dict[str, Any]:
    """A flaw of ``kind`` with a random target and trigger and a poisoning strength drawn from the recipe."""
    from eis.zoo.suites import random_flaw

    base = "patch" if kind == "patch_random" else kind
    flaw = random_flaw(base, rng, num_classes)
    flaw["poison_rate"] = round(rng.uniform(*recipe.poison_rate), 3)
    side = rng.uniform(*recipe.trigger_size)
    if base == "patch":
        flaw["size"] = min(size // 2, max(MIN_PATCH, round(side * size)))
        if kind == "patch_random":
            flaw["position"] = "random"
    elif base == "natural":
        flaw["radius"] = round(max(2.5, side * size / 2), 2)
    elif base == "blend":
        flaw["alpha"] = round(rng.uniform(*recipe.opacity), 3)
    return flaw
