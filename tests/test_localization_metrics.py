"""Localization metrics against values worked out by hand from the published definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from eis.errors import EisError
from eis.tracks.metrics.localization import (
    LOWER_IS_BETTER,
    METRIC_NAMES,
    auroc,
    l1_distance,
    localization_metrics,
    pearson,
    pointing_game,
    reduce_channels,
    relevance_rank_accuracy,
    topk_iou,
)

# A 2 x 3 map; the mask holds the pixels valued 0.5 and 0.3 (k = 2, P = 6).
A = torch.tensor([[[0.1, 0.5, 0.2], [0.9, 0.3, 0.0]]])
M = torch.tensor([[[False, True, False], [False, True, False]]])

# Hand-worked values:
#  pearson: sum(a)=2, mean a = mean m = 1/3; cov = 0.8 - 6/9 = 2/15; var_a = 1.2 - 6/9 = 8/15;
#           var_m = 2 - 6/9 = 4/3  ->  r = (2/15) / sqrt(32/45) = sqrt(10)/20
#  pointing game: argmax is 0.9, outside the mask -> 0
#  mass accuracy: (0.5 + 0.3) / 2.0 = 0.4
#  rank accuracy: top-2 = {0.9, 0.5}, one in the mask -> 1/2
#  AUROC: pairs (pos, neg) with pos > neg: 0.5 beats {0.1, 0.2, 0.0}, 0.3 beats {0.1, 0.2, 0.0} -> 6/8
#  top-k IoU: |top-2 ∩ M| = 1, |top-2 ∪ M| = 3 -> 1/3
#  L1 distance: min 0, max 0.9 -> a' = [1/9, 5/9, 2/9, 1, 1/3, 0]; |a' - m| = [1/9, 4/9, 2/9, 1, 2/3, 0]
#               sums to 22/9 -> mean over 6 pixels 11/27
EXPECTED = {
    "pearson": math.sqrt(10) / 20,
    "pointing_game": 0.0,
    "relevance_mass_accuracy": 0.4,
    "relevance_rank_accuracy": 0.5,
    "auroc": 0.75,
    "topk_iou": 1 / 3,
    "l1_distance": 11 / 27,
}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_hand_worked_values(name: str) -> None:
    got = localization_metrics(A, M)[name]
    assert got.shape == (1,)
    assert got.item() == pytest.approx(EXPECTED[name], abs=1e-6)


def test_hand_worked_hit_case() -> None:
    # Mask on 0.5 and 0.9: argmax inside, top-2 = mask, every mask pixel above every other.
    m = torch.tensor([[[False, True, False], [True, False, False]]])
    v = localization_metrics(A, m)
    assert v["pointing_game"].item() == 1.0
    assert v["relevance_mass_accuracy"].item() == pytest.approx(1.4 / 2.0, abs=1e-6)
    assert v["relevance_rank_accuracy"].item() == 1.0
    assert v["auroc"].item() == 1.0
    assert v["topk_iou"].item() == 1.0
    # a' = [1/9, 5/9, 2/9, 1, 1/3, 0] vs m = [0, 1, 0, 1, 0, 0]: (1 + 4 + 2 + 0 + 3 + 0) / 9 / 6 = 5/27
    assert v["l1_distance"].item() == pytest.approx(5 / 27, abs=1e-6)


def test_l1_distance_blank_perfect_and_scale() -> None:
    assert {"l1_distance"} == LOWER_IS_BETTER
    # the blank map is k / P: 2/6 here, 4/256 for a 2x2 trigger on a 16x16 image
    assert l1_distance(torch.zeros(1, 2, 3), M).item() == pytest.approx(1 / 3, abs=1e-12)
    small = torch.zeros(1, 16, 16, dtype=torch.bool)
    small[0, :2, :2] = True
    assert l1_distance(torch.zeros(1, 16, 16), small).item() == pytest.approx(4 / 256, abs=1e-12)
    # the mask itself (any positive scale, any offset) is perfect: 0
    assert l1_distance(M.float() * 7.0 + 2.0, M).item() == 0.0
    # the inverted mask is the worst map: 1 everywhere
    assert l1_distance((~M).float(), M).item() == 1.0
    # min-max normalisation ignores scale and offset, and the signed reduction keeps the sign
    assert l1_distance(3 * A + 1, M).item() == pytest.approx(11 / 27, abs=1e-6)
    signed = torch.tensor([[[-1.0, 1.0, -1.0], [-1.0, 0.0, -1.0]]])  # sum -> a' = [0, 1, 0, 0, 1/2, 0]
    assert l1_distance(signed, M, reduction="sum").item() == pytest.approx(0.5 / 6, abs=1e-12)


def test_channel_reductions() -> None:
    c1 = torch.tensor([[-0.1, 0.2, 0.2], [-0.4, 0.3, 0.0]])
    c2 = torch.tensor([[0.0, -0.3, 0.0], [0.5, 0.0, 0.0]])
    maps = torch.stack([c1, c2]).unsqueeze(0)  # (1, 2, 2, 3)
    torch.testing.assert_close(reduce_channels(maps, "abs_sum"), A.double())
    torch.testing.assert_close(reduce_channels(maps, "sum"), (c1 + c2).unsqueeze(0).double())
    torch.testing.assert_close(
        reduce_channels(maps, "max_abs"), torch.tensor([[[0.1, 0.3, 0.2], [0.5, 0.3, 0.0]]]).double()
    )
    torch.testing.assert_close(reduce_channels(maps, "l2"), (c1**2 + c2**2).sqrt().unsqueeze(0).double())
    # The default (abs_sum) on the two-channel map gives the hand-worked values of A.
    v = localization_metrics(maps, M)
    for name in METRIC_NAMES:
        assert v[name].item() == pytest.approx(EXPECTED[name], abs=1e-6)
    # (N, H, W) maps are one channel: abs_sum takes |.|, sum keeps the sign.
    torch.testing.assert_close(reduce_channels(-A, "abs_sum"), A.double())
    torch.testing.assert_close(reduce_channels(-A, "sum"), -A.double())
    with pytest.raises(EisError, match="valid: abs_sum"):
        reduce_channels(A, "mean")


def test_ties_are_scored_by_expectation() -> None:
    # Two maximal pixels, one in the mask: pointing game 1/2 (Quantus' "any" rule would say 1).
    a = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    m = torch.tensor([[[True, False, True], [False, False, False]]])
    assert pointing_game(a, m).item() == 0.5
    # Top-2 = the two 1.0s, one in the mask -> rank accuracy 1/2, IoU 1 / (2 + 2 - 1).
    assert relevance_rank_accuracy(a, m).item() == 0.5
    assert topk_iou(a, m).item() == pytest.approx(1 / 3, abs=1e-12)
    # Three-way tie at the k-th value: 1.0 (in mask) is taken, then 1 of the three 0.5s, one of which is
    # in the mask -> expected hits 1 + 1/3, rank accuracy (4/3) / 2.
    a = torch.tensor([[[1.0, 0.5, 0.5], [0.5, 0.0, 0.0]]])
    m = torch.tensor([[[True, False, False], [True, False, False]]])
    assert relevance_rank_accuracy(a, m).item() == pytest.approx(2 / 3, abs=1e-12)
    # AUROC with ties: pos {1.0, 0.5}, neg {0.5, 0.5, 0, 0}: 1.0 beats 4; 0.5 beats 2 and ties 2 -> 7/8.
    assert auroc(a, m).item() == pytest.approx(7 / 8, abs=1e-12)


@pytest.mark.parametrize("value", [0.0, 0.37])
def test_constant_map_scores_chance(value: float) -> None:
    a = torch.full((1, 2, 3), value)
    v = localization_metrics(a, M)  # k / P = 1/3
    assert v["pearson"].item() == 0.0
    assert v["auroc"].item() == 0.5
    assert v["pointing_game"].item() == pytest.approx(1 / 3, abs=1e-12)
    assert v["relevance_rank_accuracy"].item() == pytest.approx(1 / 3, abs=1e-12)
    assert v["relevance_mass_accuracy"].item() == pytest.approx(1 / 3, abs=1e-12)
    # expected hits = 2 * 1/3 -> IoU = (2/3) / (4 - 2/3) = 1/5
    assert v["topk_iou"].item() == pytest.approx(0.2, abs=1e-12)
    # a constant map is the blank map: distance k / P
    assert v["l1_distance"].item() == pytest.approx(1 / 3, abs=1e-12)


def test_degenerate_masks_give_nan() -> None:
    maps = torch.rand(3, 2, 3, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 2, 3, dtype=torch.bool)
    masks[1] = True  # full mask
    masks[2, 0, 0] = True  # a proper mask
    for name, values in localization_metrics(maps, masks).items():
        assert math.isnan(values[0].item()), name
        assert math.isnan(values[1].item()), name
        assert not math.isnan(values[2].item()), name


def test_shape_errors() -> None:
    with pytest.raises(EisError, match="masks must be"):
        pearson(torch.rand(2, 3, 4), torch.ones(2, 4, 3, dtype=torch.bool))
    with pytest.raises(EisError, match="maps must be"):
        pearson(torch.rand(3, 4), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(EisError, match="top-k IoU needs"):
        topk_iou(torch.rand(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), k=5)


def _random_batch(seed: int, n: int = 8, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, 3, 7, 9, generator=g)
    if levels is not None:  # quantise to force ties
        maps = torch.round(maps * levels) / levels
    masks = torch.rand(n, 7, 9, generator=g) < 0.25
    masks[:, 0, 0] = True
    masks[:, -1, -1] = False
    return maps, masks


@pytest.mark.parametrize("levels", [None, 1])
def test_auroc_matches_sklearn(levels: int | None) -> None:
    maps, masks = _random_batch(1, levels=levels)
    got = auroc(maps, masks)
    a = maps.abs().sum(1).flatten(1).numpy()
    m = masks.flatten(1).numpy()
    want = [roc_auc_score(m[i], a[i]) for i in range(len(a))]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_pearson_matches_numpy() -> None:
    maps, masks = _random_batch(2)
    got = pearson(maps, masks, reduction="sum")
    a = maps.sum(1).flatten(1).double().numpy()
    m = masks.flatten(1).double().numpy()
    want = [np.corrcoef(a[i], m[i])[0, 1] for i in range(len(a))]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_untied_maps_match_quantus_style_reference() -> None:
    """Without ties, the tie rules do not matter: compare with a per-input numpy implementation."""
    maps, masks = _random_batch(3)
    v = localization_metrics(maps, masks, reduction="l2")
    a = (maps.double() ** 2).sum(1).sqrt().flatten(1).numpy()
    m = masks.flatten(1).numpy()
    for i in range(len(a)):
        k = int(m[i].sum())
        top = np.argsort(a[i])[-k:]
        hits = np.isin(top, np.flatnonzero(m[i])).sum()
        assert v["pointing_game"][i].item() == float(m[i][np.argmax(a[i])])
        assert v["relevance_mass_accuracy"][i].item() == pytest.approx(
            a[i][m[i]].sum() / a[i].sum(), abs=1e-12
        )
        assert v["relevance_rank_accuracy"][i].item() == pytest.approx(hits / k, abs=1e-12)
        assert v["topk_iou"][i].item() == pytest.approx(hits / (2 * k - hits), abs=1e-12)


def test_batched_equals_one_at_a_time() -> None:
    maps, masks = _random_batch(4, levels=2)
    batched = localization_metrics(maps, masks)
    for i in range(len(maps)):
        single = localization_metrics(maps[i : i + 1], masks[i : i + 1])
        for name in METRIC_NAMES:
            assert single[name].item() == pytest.approx(batched[name][i].item(), abs=1e-12)


def test_topk_iou_with_explicit_k() -> None:
    # k = 1: top-1 is 0.9 (not in M = {0.5, 0.3}) -> IoU 0; k = 3: {0.9, 0.5, 0.3} -> 2 / 3.
    assert topk_iou(A, M, k=1).item() == 0.0
    assert topk_iou(A, M, k=3).item() == pytest.approx(2 / 3, abs=1e-6)
