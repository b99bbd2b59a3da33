"""The realistic tier's ViTs: ViT-Tiny and the conv-stem ViT (Xiao et al. 2021), parameters worked out by
hand, shapes and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eis.errors import EisError
from eis.zoo.archs import ConvStemViT, build_arch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _block(dim: int) -> int:
    """One pre-norm block: two LayerNorms, qkv, the attention's projection and the 4x MLP."""
    return (
        2 * 2 * dim
        + (dim * 3 * dim + 3 * dim)
        + (dim * dim + dim)
        + (dim * 4 * dim + 4 * dim)
        + (4 * dim * dim + dim)
    )


def _stem(dim: int) -> int:
    """Three 3x3 stride-2 convs without bias (3 -> dim/4 -> dim/2 -> dim), a BatchNorm (scale and shift)
    after each, and a 1x1 conv with bias to dim."""
    c1, c2, c3 = dim // 4, dim // 2, dim
    convs = 3 * 9 * c1 + c1 * 9 * c2 + c2 * 9 * c3
    norms = 2 * (c1 + c2 + c3)
    return convs + norms + (c3 * dim + dim)


def test_vit_tiny_parameters_and_output():
    """ViT-Tiny at depth 6, patch 8, 64 px, 10 classes: worked out by hand from its parts."""
    dim, depth, tokens = 192, 6, 64
    expected = (
        (3 * 8 * 8 * dim + dim) + dim + (tokens + 1) * dim + depth * _block(dim) + 2 * dim + (dim * 10 + 10)
    )
    model = build_arch("vit-tiny", 3, 10, 64)
    assert sum(p.numel() for p in model.parameters()) == expected
    out = model(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "dim"), [("vit-tiny-c", 192), ("vit-tiny-c-d96", 96)])
def test_conv_stem_vit_parameters(name, dim):
    """Depth 5 after the stem, 64 px, 8 px effective patches (64 tokens and the class token), 10 classes."""
    depth, tokens = 5, 64
    expected = _stem(dim) + dim + (tokens + 1) * dim + depth * _block(dim) + 2 * dim + (dim * 10 + 10)
    model = build_arch(name, 3, 10, 64)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert sum(p.numel() for p in model.embed.parameters()) == _stem(dim)
    assert _stem(192) == 246_384 and expected == (2_485_690 if dim == 192 else 628_834)
    assert len(model.blocks) == depth


@pytest.mark.parametrize("size", [32, 64])
def test_conv_stem_vit_shapes(size):
    model = build_arch("vit-tiny-c-d96", 3, 10, size).eval()
    x = torch.rand(3, 3, size, size)
    side = size // 8
    assert model.embed(x).shape == (3, 96, side, side)
    assert model.pos.shape == (1, side * side + 1, 96)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("train", [True, False])
def test_gradients_reach_the_input_and_every_parameter(train):
    model = build_arch("vit-tiny-c-d96", 3, 10, 32).train(train)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_stem_wants_a_power_of_two_patch():
    with pytest.raises(EisError, match="a conv stem wants a patch of 2, 4, 8"):
        ConvStemViT(3, 10, 36, dim=96, patch=6)
    assert isinstance(build_arch("vit-tiny", 3, 10, 64).embed, torch.nn.Conv2d)  # the plain ViT is unchanged


def _squares(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with one bright 6 px square, in the top half (class 0) or the bottom half (class 1)."""
    x = torch.rand(n, 3, 32, 32, generator=gen) * 0.5
    y = torch.randint(0, 2, (n,), generator=gen)
    rows = torch.randint(0, 10, (n,), generator=gen) + 16 * y
    cols = torch.randint(0, 26, (n,), generator=gen)
    for i in range(n):
        x[i, :, rows[i] : rows[i] + 6, cols[i] : cols[i] + 6] = 1.0
    return x, y


def test_conv_stem_vit_learns_with_the_zoo_training_loop():
    """128 steps of eis's own loop take the stem ViT from chance to 0.87 held-out accuracy (measured) on a
    task whose answer is where a square lies (so position embeddings and attention must carry it)."""
    from eis.zoo.train import fit, predict

    gen = torch.Generator().manual_seed(0)
    x, y = _squares(512, gen)
    test_x, test_y = _squares(256, gen)
    torch.manual_seed(0)
    model = build_arch("vit-tiny-c-d96", 3, 2, 32)
    settings = {"epochs": 8, "batch_size": 32, "lr": 1e-3, "optimizer": "adamw", "weight_decay": 0.05}
    fit(model, x, y, settings, torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        assert (predict(model, test_x) == test_y).float().mean() >= 0.8
