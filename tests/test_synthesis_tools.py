"""Synthesis tools: shape/range/determinism contract, no side effects, bad input, and hand-checked helpers."""

from __future__ import annotations

import json

import pytest
import torch

from eis.errors import EisError
from eis.testing import contract_model
from eis.tools.base import list_tools, make_tool
from eis.tools.synthesis.base import paste
from eis.tools.synthesis.inversion import zoom_to_mask

FAST = {
    "feature_viz": {"steps": 3, "n_aug": 2},
    "adversarial_patch": {"steps": 3, "batch_size": 2},
    "feature_adversary": {"steps": 3, "batch_size": 2, "generator_steps": 20},
    "trigger_inversion": {"steps": 3, "batch_size": 4},
    "noise_images": {},
    "class_mean": {},
}


def test_registry_lists_the_synthesis_family() -> None:
    assert set(list_tools("synthesis")) == set(FAST)
    assert set(list_tools("synthesis", controls=True)) == {"noise_images", "class_mean"}


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("arch,c,side", [("cnn", 1, 16), ("resnet", 3, 32)])
def test_contract(name: str, arch: str, c: int, side: int) -> None:
    model = contract_model(arch, c, side)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(12, c, side, side, generator=torch.Generator().manual_seed(1))
    tool = make_tool(name, n_images=5, **FAST[name])
    out = tool.synthesize(model, 3, x)
    assert out.shape == (5, c, side, side) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, tool.synthesize(model, 3, x)), "same seed, different images"
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    json.dumps(tool.settings())


@pytest.mark.parametrize("name", ["feature_viz", "noise_images", "trigger_inversion"])
def test_bad_input_raises(name: str) -> None:
    model = contract_model("cnn", 1, 16)
    tool = make_tool(name, **FAST[name])
    with pytest.raises(EisError, match="target"):
        tool.synthesize(model, 10, torch.rand(4, 1, 16, 16))
    with pytest.raises(EisError, match="clean_inputs"):
        tool.synthesize(model, 0, torch.rand(0, 1, 16, 16))
    with pytest.raises(EisError, match="n_images"):
        make_tool(name, n_images=0, **FAST[name]).synthesize(model, 0, torch.rand(4, 1, 16, 16))


def test_paste_full_and_half_size_by_hand() -> None:
    x = torch.zeros(2, 1, 8, 8)
    patch = torch.arange(64.0).view(1, 1, 8, 8).repeat(2, 1, 1, 1) / 64
    one, zero = torch.ones(2), torch.zeros(2)
    out = paste(x, patch, one, zero, torch.zeros(2, 2))
    assert torch.allclose(out, patch, atol=1e-6)  # side 1, centred: the patch is the image
    small = torch.ones(1, 1, 2, 2)
    out = paste(
        torch.zeros(1, 1, 8, 8), small, torch.tensor([0.5]), torch.zeros(1), torch.tensor([[0.5, -0.5]])
    )
    # side 4 px centred at (x, y) = (0.5, -0.5) in [-1, 1]: rows 0..3, columns 4..7 (bilinear: a soft rim)
    assert torch.allclose(out[0, 0, 1:3, 5:7], torch.ones(2, 2))
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[0:4, 4:8] = False
    assert out[0, 0][outside].abs().max() < 0.07 and out[0, 0, 0:4, 4:8].min() > 0.3


def test_class_mean_uses_labels_or_predictions() -> None:
    model = contract_model("cnn", 1, 16)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2, 2, 5, 5, 2, 1])
    out = make_tool("class_mean", n_images=4).synthesize(model, 5, x, labels=y)
    # class 5 has 2 members: each image is the mean of a random half, i.e. one of them
    assert all(any(torch.allclose(o, x[i]) for i in (2, 3)) for o in out)
    pred = model(x).argmax(1)
    t = int(pred[0])
    by_pred = make_tool("class_mean", n_images=3).synthesize(model, t, x)
    assert torch.equal(by_pred, make_tool("class_mean", n_images=3).synthesize(model, t, x, labels=pred))


def test_zoom_to_mask_by_hand() -> None:
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 6:8, 6:8] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.zeros(1, 8, 8)
    mask[0, 6:8, 6:8] = 1.0
    out = zoom_to_mask(img, mask)
    expect = torch.zeros(8, 8)
    expect[:4, :4], expect[4:, 4:] = 1.0, 1.0  # the 2x2 crop enlarged 4x
    assert torch.equal(out[0, 0], expect)


def test_adversarial_patch_raises_target_probability(smoke) -> None:
    case = smoke["digits-cnn-clean"]
    model, (x, _) = case.model("cpu"), case.inputs(64)
    base = make_tool("adversarial_patch", n_images=2, steps=0)
    tuned = make_tool("adversarial_patch", n_images=2, steps=40, batch_size=8, lr=0.2)

    def target_prob(tool) -> float:
        patch = tool.synthesize(model, 4, x)[:1].expand(len(x), -1, -1, -1)
        n = len(x)
        pasted = paste(x, patch, torch.full((n,), 0.5), torch.zeros(n), torch.zeros(n, 2))
        with torch.no_grad():
            return float(model(pasted).softmax(1)[:, 4].mean())

    assert target_prob(tuned) > target_prob(base) + 0.1


def test_generator_cache_round_trip_and_corruption(fresh_home) -> None:
    from eis.zoo.generators import _generator, get_generator

    imgs = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    g = get_generator(images=imgs, steps=5)
    z = torch.randn(3, g.latent, generator=torch.Generator().manual_seed(1))
    first = g(z)
    roots = list((fresh_home / "generators").iterdir())
    assert len(roots) == 1 and (roots[0] / "weights.safetensors").is_file()
    meta = json.loads((roots[0] / "meta.json").read_text())
    assert meta["key"]["steps"] == 5 and len(meta["sha256"]) == 64
    _generator.cache_clear()
    assert torch.allclose(get_generator(images=imgs, steps=5)(z), first)  # loaded from the cache
    (roots[0] / "weights.safetensors").write_bytes(b"corrupt")
    _generator.cache_clear()
    again = get_generator(images=imgs, steps=5)(z)  # retrained (same seed: same weights)
    assert torch.allclose(again, first, atol=1e-5)
    assert json.loads((roots[0] / "meta.json").read_text())["sha256"] == meta["sha256"]
    with pytest.raises(EisError, match="exactly one"):
        get_generator()
