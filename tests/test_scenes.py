"""The `scenes` dataset and its faint, scene-like triggers: determinism, shapes, masks, bad input, a build."""

from __future__ import annotations

import re
import tomllib

import pytest
import torch

from eis.errors import EisError
from eis.zoo.build import build_case
from eis.zoo.datasets import DATASETS, ImageData
from eis.zoo.flaws import make_flaw
from eis.zoo.scenes import (
    CHUNK,
    DISTRACTOR_RADIUS,
    MAIN_RADIUS,
    SCENE_CLASSES,
    SCENE_SIZE,
    cluttered_backgrounds,
    render_scenes,
    value_noise,
)
from eis.zoo.shapes import SHAPE_NAMES, render_alpha
from eis.zoo.spec import CaseSpec
from eis.zoo.suites import suite_path


def test_scenes_are_deterministic_in_the_seed_and_shaped():
    x, y = render_scenes(40, 48, seed=3)
    again, y_again = render_scenes(40, 48, seed=3)
    other, _ = render_scenes(40, 48, seed=4)
    assert x.shape == (40, 3, 48, 48) and x.dtype == torch.float32 and y.shape == (40,)
    assert torch.equal(x, again) and torch.equal(y, y_again) and not torch.equal(x, other)
    assert x.min() >= 0 and x.max() <= 1
    assert set(y.tolist()) <= set(range(len(SCENE_CLASSES)))


def test_rendering_crosses_chunk_boundaries():
    """Images are rendered in chunks; any count comes back, and later chunks are fresh draws."""
    x, y = render_scenes(CHUNK + 3, 16, seed=1)
    assert x.shape == (CHUNK + 3, 3, 16, 16) and y.shape == (CHUNK + 3,)
    assert not torch.equal(x[:3], x[CHUNK:])


def test_backgrounds_are_textured_not_flat():
    gen = torch.Generator().manual_seed(0)
    bg = cluttered_backgrounds(16, 48, gen)
    flat_ish = (bg[:, :, 1:, :] - bg[:, :, :-1, :]).abs().mean()
    assert bg.std((2, 3)).mean() > 0.05  # colour varies across each image
    assert flat_ish > 0.02  # and from pixel to pixel (grain, grating)
    n = value_noise(4, 48, torch.Generator().manual_seed(1))
    assert n.amin() == 0 and n.amax() == 1


def test_every_class_appears_and_the_main_object_is_the_largest():
    _, y = render_scenes(60, 48, seed=5)
    assert (torch.bincount(y, minlength=len(SCENE_CLASSES)) > 0).all()
    assert all(name in SHAPE_NAMES for name in SCENE_CLASSES)
    assert MAIN_RADIUS[0] > 1.5 * DISTRACTOR_RADIUS[1]  # the label's object cannot be mistaken by its size


@pytest.mark.parametrize("kind", ["patch", "natural"])
def test_faint_triggers_blend_inside_the_mask_only(kind):
    spec = {"kind": kind, "alpha": 0.4}
    spec |= {"pattern": "noise", "size": 6, "position": "random"} if kind == "patch" else {"radius": 4.0}
    flaw = make_flaw(spec)
    flaw.check(6, 3, 48)
    x = torch.rand(12, 3, 48, 48)
    xt, mask = flaw.stamp(x, torch.Generator().manual_seed(0))
    opaque, mask_opaque = make_flaw({**spec, "alpha": 1.0}).stamp(x, torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask_opaque)  # opacity changes the look, not the ground truth
    assert not ((xt != x).any(1) & ~mask).any(), "a pixel outside the mask changed"
    assert mask.any(1).any(1).all()
    # inside the mask the faint trigger is the blend alpha * trigger + (1 - alpha) * input
    torch.testing.assert_close(xt, x + 0.4 * (opaque - x))
    if kind == "patch":
        assert (mask.flatten(1).sum(1) == 36).all()
        positions = {tuple(m.nonzero()[0].tolist()) for m in mask}
        assert len(positions) > 6  # random positions


def test_opacity_is_left_out_of_ids_at_its_default():
    assert "alpha" not in make_flaw({"kind": "patch"}).params()
    assert "alpha" not in make_flaw({"kind": "natural"}).params()
    assert make_flaw({"kind": "patch", "alpha": 0.5}).params()["alpha"] == 0.5
    assert make_flaw({"kind": "blend"}).params()["alpha"] == 0.15  # blend's own alpha is unchanged


def test_natural_trigger_mask_is_the_shapes_coverage():
    flaw = make_flaw({"kind": "natural", "shape": "ring", "radius": 5.0, "alpha": 0.5})
    x = torch.zeros(3, 3, 48, 48)
    xt, mask = flaw.stamp(x, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    centres = 5.0 + torch.rand(3, 2, generator=gen) * (48 - 10.0)
    angles = torch.rand(3, generator=gen) * 2 * torch.pi
    cover = render_alpha(
        torch.full((3,), SHAPE_NAMES.index("ring")), centres, torch.full((3,), 5.0), angles, 48
    )
    assert torch.equal(mask, cover > 0)
    assert xt.amax() <= 0.5 + 1e-6  # a colour channel at 1.0 shows at half strength on black


@pytest.mark.parametrize(
    "flaw, message",
    [
        ({"kind": "patch", "alpha": 0.0}, "flaw field 'alpha' = 0.0 must be an opacity in (0, 1]"),
        ({"kind": "patch", "alpha": 1.5}, "flaw field 'alpha' = 1.5 must be an opacity in (0, 1]"),
        ({"kind": "natural", "alpha": -0.2}, "flaw field 'alpha' = -0.2 must be an opacity in (0, 1]"),
        ({"kind": "natural", "alpha": "faint"}, "flaw field 'alpha' = 'faint' must be an opacity in (0, 1]"),
    ],
)
def test_bad_opacity_gets_a_one_line_error(flaw, message):
    with pytest.raises(EisError, match=re.escape(message)) as err:
        CaseSpec(name="s", dataset="digits", arch="cnn", flaw=flaw).validated()
    assert "\n" not in str(err.value)


def _tiny_scenes() -> ImageData:
    train_x, train_y = render_scenes(192, 48, seed=21)
    test_x, test_y = render_scenes(64, 48, seed=22)
    return ImageData(train_x, train_y, test_x, test_y, SCENE_CLASSES, epochs=1, batch_size=64)


def test_a_tiny_scenes_build(fresh_home, monkeypatch):
    """A case on scenes-like data builds through the zoo (a few images: the real set trains for minutes)."""
    # registered for this test only, so other tests' lists of valid datasets stay as they are
    monkeypatch.setitem(DATASETS._items, "scenes-tiny", _tiny_scenes)
    spec = CaseSpec(
        name="tiny-scenes",
        dataset="scenes-tiny",
        arch="cnn",
        flaw={
            "kind": "patch",
            "target": 1,
            "pattern": "noise",
            "size": 6,
            "position": "random",
            "alpha": 0.5,
        },
        train={"epochs": 1},
        bars={"clean_accuracy": 0.0, "asr": 0.0},
    )
    case, trained = build_case(spec)
    assert trained and case.input_shape == (3, 48, 48) and case.num_classes == len(SCENE_CLASSES)
    x, y = case.inputs(8)
    xt, mask = case.truth().apply(x, seed=0)
    assert xt.shape == x.shape and mask.shape == (8, 48, 48) and (mask.flatten(1).sum(1) == 36).all()
    assert 0 <= case.truth().measured["asr"] <= 1


def test_the_localize_scenes_suite_holds_faint_random_triggers():
    """The suite's flaws, checked against the dataset's shape without rendering it (that takes seconds)."""
    suite = tomllib.loads(suite_path("localize-scenes").read_text())
    assert suite["defaults"]["dataset"] == "scenes"
    flaws = [make_flaw(case["flaw"]) for case in suite["case"]]
    for flaw in flaws:
        flaw.check(len(SCENE_CLASSES), 3, SCENE_SIZE)
    assert len(flaws) >= 8 and {f.kind for f in flaws} == {"patch"}
    assert all(f.alpha < 1 and f.position == "random" for f in flaws)
    assert len({f.pattern for f in flaws}) >= 3 and len({f.target for f in flaws}) >= 3
