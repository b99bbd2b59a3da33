"""Feature cases over a zoo image model: penultimate-layer activations, labelled by known latents.

The rows are images of the model's dataset read at its penultimate layer (the input of its last linear
layer, where the ``feature_usefulness`` track reads it): the first ``n_train`` training images (what tools
fit on: an auditor's data is the model's own) and the first ``n_eval`` held-out test images (what is
scored), each at most the split's size. In each split a seeded ``rate`` of the rows
(:func:`stamped_rows`) are replaced by copies with the model's planted trigger (or spurious cue) stamped in,
as its flaw stamps them.

Each row is labelled with concepts the generator knows (:func:`concept_names`):

- ``class:k``: the image's class (a stamped copy keeps its image's class, not the trigger's target);
- ``trigger``: the row is a stamped copy (a model whose flaw stamps nothing has no such column);
- for ``shapes`` (:data:`DATASET_CONCEPTS`; replayed from the generator's draws, not rendered again):
  ``colour:red`` / ``colour:green`` / ``colour:blue``, the object's strongest colour channel, and
  ``position:top_left`` / ``top_right`` / ``bottom_left`` / ``bottom_right``, the quadrant of its centre.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from eis.errors import EisError
from eis.zoo.case import Case
from eis.zoo.datasets import SHAPES_INFO, SHAPES_SPLITS
from eis.zoo.flaws import Flaw
from eis.zoo.shapes import draw_shapes

SPLITS = {"train": "train", "eval": "test"}  # feature split -> the dataset split its images come from
COLOURS = ("red", "green", "blue")
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def shapes_concepts(split: str) -> dict[str, torch.Tensor]:
    """Per image of the ``shapes`` dataset's ``split`` (``train`` or ``test``), in order: the object's
    strongest colour channel and the quadrant of its centre, as (N,) bool columns."""
    n, seed = SHAPES_SPLITS[split]
    size = SHAPES_INFO.input_shape[-1]
    drawn = draw_shapes(n, size, seed)
    channel = drawn["colour"].argmax(1)
    top, left = drawn["centers"][:, 0] < size / 2, drawn["centers"][:, 1] < size / 2
    quadrant = 2 * (~top).long() + (~left).long()
    return {
        **{f"colour:{c}": channel == i for i, c in enumerate(COLOURS)},
        **{f"position:{q}": quadrant == i for i, q in enumerate(QUADRANTS)},
    }


# dataset -> (names, per split columns) of its latents beyond the class, where the generator exposes them
DATASET_CONCEPTS: dict[str, tuple[tuple[str, ...], Callable[[str], dict[str, torch.Tensor]]]] = {
    "shapes": ((*(f"colour:{c}" for c in COLOURS), *(f"position:{q}" for q in QUADRANTS)), shapes_concepts),
}


def stamps(flaw: Flaw) -> bool:
    """Whether ``flaw`` stamps a trigger (or cue) into inputs."""
    return type(flaw).stamp is not Flaw.stamp


def concept_names(num_classes: int, trigger: bool, dataset: str) -> list[str]:
    """The labelled concepts, in column order, of a case over a model of ``num_classes`` classes trained
    on ``dataset`` (``trigger``: whether its flaw stamps one)."""
    extra = DATASET_CONCEPTS[dataset][0] if dataset in DATASET_CONCEPTS else ()
    return [*(f"class:{k}" for k in range(num_classes)), *(["trigger"] if trigger else []), *extra]


def stamped_rows(n: int, rate: float, seed: int) -> torch.Tensor:
    """The sorted indices of the ``round(rate * n)`` rows (of ``n``) that carry the trigger."""
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: round(rate * n)]
    return pick.sort().values


def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, width) inputs of the model's last linear layer, batched, without gradients."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise EisError(f"{type(model).__name__} has no linear layer to read activations before")
    seen: list[torch.Tensor] = []
    handle = last[-1].register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach().flatten(1)))
    dev = next(model.parameters()).device
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(dev))
    finally:
        handle.remove()
    return torch.cat(seen).float().cpu()


def image_rows(case: Case, *, n_train: int, n_eval: int, rate: float, seed: int) -> dict[str, torch.Tensor]:
    """``train_activations`` / ``eval_activations`` (rows, width), ``labels_train`` / ``labels_eval``
    (rows, concepts) bool and ``stamped_train`` / ``stamped_eval`` (the stamped rows' indices) of an image
    ``case``, as the module docstring says; deterministic in ``seed``."""
    truth = case.truth()
    trigger = stamps(truth.flaw)
    names, extra = DATASET_CONCEPTS.get(case.dataset, ((), None))
    model = case.model("cpu")
    out: dict[str, torch.Tensor] = {}
    for offset, (split, data_split) in enumerate(SPLITS.items()):
        x, y = case.inputs(n_train if split == "train" else n_eval, split=data_split)
        columns = [y == k for k in range(case.num_classes)]
        picks = torch.zeros(0, dtype=torch.long)
        if trigger:
            picks = stamped_rows(len(x), rate, 2 * seed + offset)
            x[picks] = truth.apply(x[picks], 2 * seed + offset)[0]
            columns.append(torch.zeros(len(x), dtype=torch.bool).index_fill(0, picks, True))
        if extra is not None:
            drawn = extra(data_split)
            columns += [drawn[name][: len(x)] for name in names]
        out[f"{split}_activations"] = penultimate(model, x).contiguous()
        out[f"labels_{split}"] = torch.stack(columns, 1)
        out[f"stamped_{split}"] = picks
    return out
