"""Implanting flaws by fine-tuning, the way TrojAI and Casper et al. (2023) made their trojaned models.

A spec whose ``train`` table holds ``finetune = { epochs = 2, lr = 2e-4 }`` is not trained from scratch: a
clean *base* model of its dataset and architecture is trained once with the rest of the ``train`` table
(a case of its own, content-addressed and cached like any other, so every trojan of one data set and
architecture shares it), and the case is a copy of that base fine-tuned for ``epochs`` epochs at peak
learning rate ``lr`` on data the flaw has poisoned. Clean controls fine-tune the same way on clean data,
so that nothing but the flaw separates them from the trojaned copies. ``base_seed`` (default 0) picks the
base; the case's own seed draws the poisoning and the data order. ``augment`` (default: the base's) sets
the fine-tuning's augmentation apart: the realistic suite fine-tunes without the base's flips and crops,
since a crop shifts a corner sticker partly out of the frame (with them, 3 of its 4 corner patches and
one natural trojan missed the attack-success bar after 4 epochs; without, a corner patch reached 0.97
after one).

A fine-tuned case carries one more bar, ``clean_vs_base``: its clean accuracy minus its base's must stay
above the threshold (default -0.05: at most five points lost to the implant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eis.errors import EisError
from eis.zoo.recipe import AUGMENTS

FINETUNE_KEYS = ("epochs", "lr", "base_seed", "augment")
DEFAULT_EPOCHS = 2
DEFAULT_LR_SHARE = 0.1  # without an lr, fine-tuning peaks at this share of the base's learning rate


def check_finetune(value: Any) -> None:
    """One-line errors for a bad ``finetune`` table."""
    if not isinstance(value, dict):
        raise EisError(f"finetune must be a table with keys {', '.join(FINETUNE_KEYS)}; got {value!r}")
    for key in value:
        if key not in FINETUNE_KEYS:
            raise EisError(f"finetune has no key {key!r}; valid: {', '.join(FINETUNE_KEYS)}")
    epochs = value.get("epochs", DEFAULT_EPOCHS)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise EisError(f"finetune epochs must be an integer >= 1; got {epochs!r}")
    lr = value.get("lr", 1.0)
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
        raise EisError(f"finetune lr must be a number > 0; got {lr!r}")
    seed = value.get("base_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise EisError(f"finetune base_seed must be an integer; got {seed!r}")
    aug = value.get("augment", [])
    if not isinstance(aug, list) or any(a not in AUGMENTS for a in aug):
        raise EisError(f"finetune augment must be a list drawn from {', '.join(AUGMENTS)}; got {aug!r}")


def base_spec(spec: Any) -> Any | None:
    """The clean base model ``spec`` fine-tunes (a CaseSpec), or None for a spec trained from scratch."""
    from eis.zoo.spec import CaseSpec

    if not isinstance(spec, CaseSpec) or "finetune" not in spec.train:
        return None
    train = {k: v for k, v in spec.train.items() if k != "finetune"}
    seed = spec.train["finetune"].get("base_seed", 0)
    return CaseSpec(
        name=f"base-{spec.dataset}-{spec.arch}-s{seed}",
        dataset=spec.dataset,
        arch=spec.arch,
        flaw={"kind": "clean"},
        seed=seed,
        train=train,
        bars={"clean_accuracy": spec.bar("clean_accuracy")},  # a base must meet its copies' accuracy bar
        device=spec.device,
    ).validated()


def bases(specs: Sequence[Any]) -> list[Any]:
    """The distinct base models of ``specs``, in first-use order."""
    out: dict[str, Any] = {}
    for spec in specs:
        base = base_spec(spec)
        if base is not None:
            out.setdefault(base.case_id, base)
    return list(out.values())


def finetune_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Training settings for the fine-tuning stage: the base's recipe with the fine-tuning epochs and lr."""
    ft = settings["finetune"]
    out = {k: v for k, v in settings.items() if k != "finetune"}
    out["epochs"] = ft.get("epochs", DEFAULT_EPOCHS)
    out["lr"] = ft.get("lr", DEFAULT_LR_SHARE * settings["lr"])
    if "augment" in ft:
        out["augment"] = ft["augment"]
    return out
