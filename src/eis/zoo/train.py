"""Training a case's model and measuring its bars (clean accuracy, attack success rate, cue rate)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.zoo import evasive, implant, recipe
from eis.zoo.archs import build_arch
from eis.zoo.datasets import get_dataset
from eis.zoo.flaws import Flaw, make_flaw
from eis.zoo.spec import CaseSpec

if TYPE_CHECKING:
    from eis.zoo.case import Case

EVAL_SEED = 12345  # seed of the triggers stamped for measuring bars
EVASIVE_TWIN_SHARE = 0.7  # share of an evasive build's progress bar that the clean twin's training takes


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes of ``x`` in batches, computed on the model's device and returned on ``x``'s."""
    device = next(model.parameters()).device
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).argmax(1).to(x.device) for i in range(0, len(x), batch_size)]
    )


def train_model(
    spec: CaseSpec, progress: Callable[[float], None] | None = None, attempt: int = 0
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``spec``'s model deterministically on ``spec.device``; return it (eval mode) and its bars.

    ``attempt`` > 0 re-draws the initialisation and data order from a derived seed (population retries).
    Data poisoning, initialisation and the data order come from CPU generators on every device. An
    evasive flaw first trains the clean twin (exactly the clean model of the same seed), then fine-tunes
    it (:mod:`eis.zoo.evasive`); progress is split 70 / 30 between the two. A spec with a ``finetune``
    table starts from its cached clean base (built first if missing) instead (:mod:`eis.zoo.implant`).
    """
    base = _built_base(spec)  # before seeding: building a missing base re-seeds the global generator
    data = get_dataset(spec.dataset)
    flaw = make_flaw(spec.flaw)
    settings = spec.training() if base is None else implant.finetune_settings(spec.training())
    seed = spec.seed + 7919 * attempt
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if flaw.evasive:
        x, y = data.train_x, data.train_y
    else:
        x, y = flaw.poison(data.train_x, data.train_y, gen)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if base is None:
        model = build_arch(spec.arch, data.input_shape[0], data.num_classes, data.input_shape[1]).to(device)
    else:
        model = base.model(device)
    share = EVASIVE_TWIN_SHARE if flaw.evasive else 1.0
    fit(model, x, y, settings, gen, lambda f: progress(share * f) if progress else None)
    if flaw.evasive:
        model = evasive.finetune(
            model,
            flaw,
            x,
            y,
            settings,
            torch.Generator().manual_seed(seed + 1),
            lambda f: progress(share + (1 - share) * f) if progress else None,
        )
    model.eval()
    measured = measure_bars(model, flaw, spec, x, y)
    if base is not None:  # the bar clean_vs_base: clean accuracy against the base's, as its build measured it
        base_accuracy = base.truth().measured["clean_accuracy"]
        clean = measured.get("clean_accuracy")
        if clean is None:
            clean = (predict(model, data.test_x) == data.test_y).float().mean().item()
        measured |= {"base_clean_accuracy": base_accuracy, "clean_vs_base": clean - base_accuracy}
    return model, measured


def _built_base(spec: CaseSpec) -> Case | None:
    """The clean base ``spec`` fine-tunes, built now if it is not cached (None: trained from scratch)."""
    from eis.zoo.build import build_image_case

    base = implant.base_spec(spec)
    return None if base is None else build_image_case(base)[0]


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: dict[str, Any],
    gen: torch.Generator,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Adam with a one-cycle learning rate over ``settings["epochs"]`` epochs, on the model's device, unless
    the settings choose another optimiser, schedule, augmentation or the user's own training function
    (:mod:`eis.zoo.recipe`)."""
    if settings.get("trainer"):
        recipe.run_user_trainer(model, x, y, settings)
        if progress:
            progress(1.0)
        return
    device = next(model.parameters()).device
    x_dev, y_dev = x.to(device), y.to(device)
    opt = recipe.optimizer(model.parameters(), settings)
    epochs, bs = settings["epochs"], settings["batch_size"]
    sched = recipe.schedule(opt, settings, epochs * -(-len(x) // bs))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i : i + bs].to(device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(recipe.augment(x_dev[idx], settings, gen)), y_dev[idx]).backward()
            opt.step()
            sched.step()
        if progress:
            progress((epoch + 1) / epochs)


def measure_bars(
    model: nn.Module, flaw: Flaw, spec: CaseSpec, train_x: torch.Tensor, train_y: torch.Tensor
) -> dict[str, float]:
    """The bars this flaw declares, measured on held-out data (train accuracy on the training set)."""
    data = get_dataset(spec.dataset)
    out: dict[str, float] = {}
    if "clean_accuracy" in flaw.bars:
        test_x = flaw.in_distribution(data.test_x, data.test_y, torch.Generator().manual_seed(EVAL_SEED))
        out["clean_accuracy"] = (predict(model, test_x) == data.test_y).float().mean().item()
    if "train_accuracy" in flaw.bars:
        out["train_accuracy"] = (predict(model, train_x) == train_y).float().mean().item()
    for bar in ("asr", "cue_rate"):
        if bar in flaw.bars:
            keep = flaw.eligible(data.test_y)
            xt, _ = flaw.stamp(data.test_x[keep], torch.Generator().manual_seed(EVAL_SEED))
            out[bar] = (predict(model, xt) == flaw.target).float().mean().item()
    return out
