"""Faithfulness curves on hand-made cases whose values follow from the published definitions by hand."""

import pytest
import torch
from torch import nn

from eis.errors import EisError
from eis.tracks.metrics import faithfulness as fm


class Linear(nn.Module):
    """logit_0 = sum(w * x), logit_1 = 0: deleting a pixel (to 0) removes exactly its w * x."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).flatten(1).sum(1)
        return torch.stack([z, torch.zeros_like(z)], 1)


# 1x2x2 image; contributions w * x = [[1, -2], [6, 2]] -> MoRF order: 6, 2, 1, -2 (pixels 2, 3, 0, 1).
X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
W = torch.tensor([[[1.0, -1.0], [2.0, 0.5]]])
T = torch.tensor([0])
MAPS = X * W  # gradient x input, the exact contributions


def test_deletion_curve_by_hand() -> None:
    m = Linear(W)
    morf = fm.deletion_curve(m, X, T, MAPS, steps=4, score="logit")
    assert morf.tolist() == [[7.0, 1.0, -1.0, -2.0, 0.0]]
    lerf = fm.deletion_curve(m, X, T, MAPS, steps=4, most_relevant_first=False, score="logit")
    assert lerf.tolist() == [[7.0, 9.0, 8.0, 6.0, 0.0]]
    # steps = 2 on 4 pixels: 0, 2, 4 pixels removed
    assert fm.deletion_curve(m, X, T, MAPS, steps=2, score="logit").tolist() == [[7.0, -1.0, 0.0]]
    # trapezoid on [0, 1] with dx = 1/4: (7/2 + 1 - 1 - 2 + 0/2) / 4 = 0.375
    assert fm.area_under_curve(morf).tolist() == [pytest.approx(0.375)]
    assert fm.area_under_curve(lerf).tolist() == [pytest.approx((3.5 + 9 + 8 + 6) / 4)]


def test_insertion_curve_by_hand_and_probabilities() -> None:
    m = Linear(W)
    ins = fm.insertion_curve(m, X, T, MAPS, steps=4, score="logit")
    assert ins.tolist() == [[0.0, 6.0, 8.0, 9.0, 7.0]]
    prob = fm.insertion_curve(m, X, T, MAPS, steps=4)  # softmax over [z, 0] = sigmoid(z)
    assert torch.allclose(prob, torch.sigmoid(ins), atol=1e-7)
    # the "mean" baseline is the image's per-channel mean, 2.5: z = 2.5 * sum(w) = 6.25
    base = fm.insertion_curve(m, X, T, MAPS, steps=4, baseline="mean", score="logit")
    assert base[0, 0].item() == pytest.approx(6.25)


def test_channels_removed_together_and_batch_invariance() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 6, 6, generator=g)
    w = torch.randn(3, 6, 6, generator=g)
    maps = torch.randn(5, 3, 6, 6, generator=g)
    m = Linear(w)
    curve = fm.deletion_curve(m, x, torch.zeros(5, dtype=torch.long), maps, steps=9, score="logit")
    # by hand: remove the top 4k pixels (all 3 channels) of the channel-summed map
    order = maps.sum(1).flatten(1).argsort(1, descending=True)
    for k in range(10):
        keep = torch.ones(5, 36)
        keep.scatter_(1, order[:, : 4 * k], 0.0)
        want = (x * w * keep.view(5, 1, 6, 6)).flatten(1).sum(1)
        assert torch.allclose(curve[:, k], want.double(), atol=1e-5)
    one = fm.deletion_curve(
        m, x, torch.zeros(5, dtype=torch.long), maps, steps=9, score="logit", batch_size=1
    )
    assert torch.equal(curve, one)


def test_region_perturbation_and_aopc_by_hand() -> None:
    # 4x4 image, 2x2 regions with relevances 4, 1, 3, 2 (top-left, top-right, bottom-left, bottom-right)
    # -> order: top-left, bottom-left, bottom-right, top-right
    rel = torch.tensor(
        [[1.0, 1.0, 0.25, 0.25], [1.0, 1.0, 0.25, 0.25], [0.75, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
    )
    x = torch.full((1, 1, 4, 4), 0.5)
    w = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    m = Linear(w)
    curve = fm.region_perturbation_curve(m, x, T, rel[None], region=2, seed=7, score="logit")
    noise = torch.rand((1, 1, 4, 4), generator=torch.Generator().manual_seed(7))  # the documented draw
    xs = x.clone()
    want = [float((xs * w).sum())]
    for r0, c0 in [(0, 0), (2, 0), (2, 2), (0, 2)]:
        xs[..., r0 : r0 + 2, c0 : c0 + 2] = noise[..., r0 : r0 + 2, c0 : c0 + 2]
        want.append(float((xs * w).sum()))
    assert torch.allclose(curve[0], torch.tensor(want, dtype=torch.float64), atol=1e-5)
    # AOPC = 1/(L+1) sum_k f(x0) - f(xk), e.g. curve [1, .5, .2] -> (0 + .5 + .8) / 3
    assert fm.aopc(torch.tensor([[1.0, 0.5, 0.2]], dtype=torch.float64)).item() == pytest.approx(1.3 / 3)
    three = fm.region_perturbation_curve(m, x, T, rel[None], region=2, steps=2, seed=7, score="logit")
    assert torch.allclose(three, curve[:, :3])


def test_noisy_linear_imputation_by_hand() -> None:
    # centre of a 3x3 image: edges 1 (weight 1/6 each), corners 4 (1/12 each): 4/6 + 16/12 = 2
    x = torch.tensor([[[[4.0, 1.0, 4.0], [1.0, 99.0, 1.0], [4.0, 1.0, 4.0]]]])
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    out = fm.noisy_linear_impute(x, removed, noise=0.0)
    assert out[0, 0, 1, 1].item() == pytest.approx(2.0)
    assert torch.equal(out[~removed[:, None]], x[~removed[:, None]])
    # a 1x4 row [0, ?, ?, 3]: u = (0 + v) / 2, v = (u + 3) / 2 -> u = 1, v = 2 (linear interpolation);
    # stacked with a second image in the same block-diagonal system, two channels at once
    row = torch.tensor(
        [[[[0.0, 9.0, 9.0, 3.0]], [[3.0, 9.0, 9.0, 0.0]]], [[[5.0, 5.0, 9.0, 5.0]], [[1.0, 1.0, 9.0, 1.0]]]]
    )
    gone = torch.tensor([[[False, True, True, False]], [[False, False, True, False]]])
    out = fm.noisy_linear_impute(row, gone, noise=0.0)
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert out[0, 1, 0].tolist() == pytest.approx([3.0, 2.0, 1.0, 0.0])
    assert out[1, :, 0, 2].tolist() == pytest.approx([5.0, 1.0])
    noisy = fm.noisy_linear_impute(row, gone, noise=0.5, seeds=torch.tensor([3, 4]))
    again = fm.noisy_linear_impute(row, gone, noise=0.5, seeds=torch.tensor([3, 4]))
    assert torch.equal(noisy, again)
    assert torch.equal(noisy[~gone[:, None].expand_as(row)], row[~gone[:, None].expand_as(row)])
    assert not torch.allclose(noisy, out)
    with pytest.raises(EisError, match="at least one kept pixel"):
        fm.noisy_linear_impute(row, torch.ones(2, 1, 4, dtype=torch.bool))


def test_road_curve_on_linear_model() -> None:
    # constant image: linear imputation restores it exactly, so (noise 0) the curve is flat
    m = Linear(W)
    x = torch.full((1, 1, 2, 2), 0.5)
    curve = fm.road_curve(m, x, T, MAPS, fractions=(0.25, 0.5, 0.75), noise=0.0, score="logit")
    assert torch.allclose(curve, torch.full((1, 3), 0.5 * W.sum().item(), dtype=torch.float64))
    # removing the top pixel (index 2, value 3) of X: its in-image neighbours 1 (1/6), 4 (1/6), 2 (1/12)
    # give (1/6 + 4/6 + 2/12) / (5/12) = 2.4; logit = 7 - 2 * 3 + 2 * 2.4 = 5.8
    one = fm.road_curve(m, X, T, MAPS, fractions=(0.25,), noise=0.0, score="logit")
    assert one.item() == pytest.approx(5.8)
    assert fm.road_auc(torch.tensor([[0.2, 0.4]])).item() == pytest.approx(0.3)


def test_road_is_batch_invariant_and_seeded() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 2, 8, 8, generator=g)
    maps = torch.randn(3, 8, 8, generator=g)
    m = Linear(torch.randn(2, 8, 8, generator=g))
    t = torch.zeros(3, dtype=torch.long)
    a = fm.road_curve(m, x, t, maps, seed=1, batch_size=4)
    b = fm.road_curve(m, x, t, maps, seed=1, batch_size=100)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, fm.road_curve(m, x, t, maps, seed=2))


def test_bad_inputs() -> None:
    m = Linear(W)
    with pytest.raises(EisError, match="unknown score"):
        fm.deletion_curve(m, X, T, MAPS, score="proba")
    with pytest.raises(EisError, match="unknown baseline"):
        fm.deletion_curve(m, X, T, MAPS, baseline="white")
    with pytest.raises(EisError, match="maps must cover"):
        fm.deletion_curve(m, X, T, torch.zeros(1, 3, 3))
    with pytest.raises(EisError, match="fractions"):
        fm.road_curve(m, X, T, MAPS, fractions=(0.5, 1.0))
    with pytest.raises(EisError, match="steps must be in"):
        fm.region_perturbation_curve(m, X, T, MAPS, region=1, steps=9)
