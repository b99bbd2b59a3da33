"""The 8-way judge: deterministic questions from the trigger library, and its validation (true trigger
picked, noise near chance) over every library item as the planted trigger."""

from __future__ import annotations

import pytest
import torch

from eis.errors import EisError
from eis.tracks.judge import CHANCE, N_OPTIONS, Judge, build_question
from eis.zoo import triggers
from eis.zoo.case import Truth
from eis.zoo.flaws import make_flaw
from eis.zoo.shapes import SHAPE_NAMES

TEST_STEPS = 300  # a shorter-trained judge keeps the tests fast; the validation must hold for it too


def truth_of(spec: dict, c: int, size: int) -> Truth:
    flaw = make_flaw({"target": 0, **spec})
    pic, mask = flaw.trigger(c, size)
    return Truth(flaw, {}, {}, pic, mask)


def library_truths(c: int, size: int) -> list[Truth]:
    specs = [{"kind": "patch", "pattern": p} for p in triggers.PATCH_PATTERNS]
    specs += [{"kind": "blend", "pattern": p} for p in triggers.BLEND_PATTERNS]
    specs += [{"kind": "natural", "shape": s, "colour": [1.0, 0.85, 0.0]} for s in SHAPE_NAMES]
    specs += [{"kind": "style", "style": k} for k in range(triggers.STYLE_COUNT)]
    return [truth_of(s, c, size) for s in specs]


@pytest.mark.parametrize("c", [1, 3])
def test_questions_are_deterministic_and_same_family(c: int) -> None:
    size = 16 if c == 1 else 32
    for kind, spec in [
        ("patch", {"pattern": "smiley"}),
        ("blend", {"pattern": "rings"}),
        ("natural", {"shape": "heart", "colour": [0.0, 1.0, 1.0]}),
        ("style", {"style": 7}),
    ]:
        truth = truth_of({"kind": kind, **spec}, c, size)
        q = build_question(truth, c, size, key="case-a")
        again = build_question(truth, c, size, key="case-a")
        assert [o.name for o in q.options] == [o.name for o in again.options] and q.answer == again.answer
        assert len(q.options) == N_OPTIONS and len({o.name for o in q.options}) == N_OPTIONS
        true = q.options[q.answer]
        assert torch.equal(true.picture, truth.trigger) and torch.equal(true.mask, truth.trigger_mask)
        if kind == "patch":
            assert all(o.name.startswith("patch:") for o in q.options)
            assert all(o.picture.shape == truth.trigger.shape for o in q.options)
        elif kind == "blend":
            assert sum(o.name.startswith("blend:") for o in q.options) == len(triggers.BLEND_PATTERNS)
            assert all(o.picture.shape == (c, size, size) for o in q.options)
        elif kind == "style":
            assert all(o.name.startswith("style:") and o.family == "style" for o in q.options)
            assert all(o.picture.shape == (c, size, size) for o in q.options)
        else:
            assert all(o.name.startswith("object:") for o in q.options)
            shapes = [o.name.split(":")[1] for o in q.options]
            assert shapes.count("heart") == (1 if c == 1 else 3)
    answers = {
        build_question(truth_of({"kind": "patch", "pattern": "x"}, c, size), c, size, key=f"k{i}").answer
        for i in range(20)
    }
    assert len(answers) > 3  # the true option's position varies with the case


def test_warp_and_clean_have_no_question() -> None:
    for spec in ({"kind": "warp"}, {"kind": "spurious"}):
        with pytest.raises(EisError, match="no trigger-picture question"):
            build_question(truth_of(spec, 1, 16), 1, 16, key="k")


def test_judge_validation_true_trigger_and_noise() -> None:
    judge = Judge("digits", steps=TEST_STEPS)
    truths = library_truths(1, 16)
    gen = torch.Generator().manual_seed(0)
    picked = noise_hits = noise_n = 0
    for i, truth in enumerate(truths):
        q = build_question(truth, 1, 16, key=f"validate-{i}")
        shown = q.options[q.answer].display(16)[None].repeat(10, 1, 1, 1)
        picked += judge.answer(shown, q).correct(q)
        for _ in range(4):
            noise_hits += judge.answer(torch.rand(10, 1, 16, 16, generator=gen), q).correct(q)
            noise_n += 1
    assert picked / len(truths) >= 0.95, picked
    assert abs(noise_hits / noise_n - CHANCE) <= 0.12, noise_hits / noise_n
    with pytest.raises(EisError, match="takes images"):
        judge.answer(torch.rand(2, 3, 16, 16), q)
