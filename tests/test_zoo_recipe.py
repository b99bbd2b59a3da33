"""The zoo's training-loop options (eis.zoo.recipe): checked, deterministic, and absent from default ids."""

from __future__ import annotations

import pytest
import torch

from eis.errors import EisError
from eis.zoo import recipe
from eis.zoo.spec import CaseSpec


def test_flips_and_crops_are_drawn_from_the_generator_and_keep_shapes():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a = recipe.augment(x, {"augment": ["flip", "crop"]}, torch.Generator().manual_seed(0))
    b = recipe.augment(x, {"augment": ["flip", "crop"]}, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    flips = [recipe.augment(x[:1], {"augment": ["flip"]}, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.equal(f, x[:1].flip(-1)) for f in flips) and any(torch.equal(f, x[:1]) for f in flips)
    crop = recipe.augment(x[:1], {"augment": ["crop"]}, torch.Generator().manual_seed(3))
    values = set(crop.flatten().tolist()) - {0.0}  # a shifted window: the image's own pixels and padding
    assert values <= set(x[0].flatten().tolist())
    assert recipe.augment(x, {}, torch.Generator()) is x  # eis's default draws nothing


def test_optimizers_and_schedules():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(recipe.optimizer(p, {"lr": 0.1, "optimizer": "sgd"}), torch.optim.SGD)
    assert isinstance(recipe.optimizer(p, {"lr": 0.1, "optimizer": "adamw"}), torch.optim.AdamW)
    opt = recipe.optimizer(p, {"lr": 0.1})
    sched = recipe.schedule(opt, {"lr": 0.1, "schedule": "cosine"}, 10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; valid: adam, adamw, sgd"),
        ({"schedule": "step"}, "unknown schedule"),
        ({"augment": ["rotate"]}, "augment must be a list drawn from flip, crop"),
        ({"weight_decay": -1}, "weight_decay must be a number >= 0"),
        ({"trainer": "nocolon"}, "trainer must read"),
    ],
)
def test_bad_options_are_one_line(train, message):
    with pytest.raises(EisError, match=message):
        CaseSpec("c", "digits", "cnn", {"kind": "clean"}, train=train).validated()


def test_default_ids_do_not_change_and_options_do():
    plain = CaseSpec("c", "digits", "cnn", {"kind": "clean"})
    assert "optimizer" not in plain.content()["train"]
    sgd = CaseSpec("c", "digits", "cnn", {"kind": "clean"}, train={"optimizer": "sgd"})
    assert sgd.validated().case_id != plain.validated().case_id
