"""Similarity metrics of the sanity track, checked against scipy/skimage and hand-worked values."""

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from eis.errors import EisError
from eis.tracks.metrics.similarity import (
    hog_correlation,
    rank_rows,
    similarities,
    spearman_abs,
    spearman_signed,
    ssim,
)


def test_rank_rows_average_ties_like_scipy() -> None:
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    expected = np.stack([rankdata(r) - 1 for r in x.numpy()])
    assert np.allclose(rank_rows(x).numpy(), expected)
    # by hand: values 1, 2 take ranks 0, 1; the three 3s share (2 + 3 + 4) / 3 = 3
    assert rank_rows(x)[0].tolist() == [3.0, 0.0, 3.0, 1.0, 3.0]


def test_spearman_matches_scipy_with_ties_and_channels() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (5, 3, 8, 8), generator=g).float()
    b = a + torch.randint(-2, 3, (5, 3, 8, 8), generator=g).float()
    got_abs = spearman_abs(a, b)
    got_signed = spearman_signed(a, b)
    for i in range(5):
        ra, rb = a[i].abs().sum(0).flatten().numpy(), b[i].abs().sum(0).flatten().numpy()
        assert got_abs[i].item() == pytest.approx(spearmanr(ra, rb).statistic, abs=1e-12)
        sa, sb = a[i].sum(0).flatten().numpy(), b[i].sum(0).flatten().numpy()
        assert got_signed[i].item() == pytest.approx(spearmanr(sa, sb).statistic, abs=1e-12)


def test_spearman_sign_flip_abs_vs_signed() -> None:
    a = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(spearman_abs(a, -a), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(spearman_signed(a, -a), -torch.ones(4, dtype=torch.float64))
    # a monotone rescaling keeps the ranks
    assert torch.allclose(spearman_signed(a, a**3), torch.ones(4, dtype=torch.float64))


def test_constant_maps() -> None:
    z = torch.zeros(2, 8, 8)
    r = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(2))
    assert spearman_abs(z, z).tolist() == [1.0, 1.0]  # a map that ignores the model: identical
    assert spearman_abs(z, r).tolist() == [0.0, 0.0]  # a blank map vs a real one: changed
    assert spearman_abs(z, z + 5).tolist() == [0.0, 0.0]  # two different constants: changed
    assert hog_correlation(z, z).tolist() == [1.0, 1.0]


def test_ssim_matches_skimage() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(3, 2, 16, 16, generator=g)
    b = a + 0.3 * torch.rand(3, 2, 16, 16, generator=g)
    got = ssim(a, b)
    for i in range(3):
        x = a[i].double().abs().sum(0).numpy()
        y = b[i].double().abs().sum(0).numpy()
        want = structural_similarity(x / x.max(), y / y.max(), data_range=1.0)
        assert got[i].item() == pytest.approx(want, abs=1e-10)
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    # scale-free: ssim works on max-normalised maps
    assert torch.allclose(ssim(a, 7 * a), torch.ones(3, dtype=torch.float64))


def test_hog_correlation_matches_manual_skimage() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.rand(2, 16, 16, generator=g)
    b = torch.rand(2, 16, 16, generator=g)
    got = hog_correlation(a, b)
    for i in range(2):
        fa = hog((a[i].double() / a[i].max()).numpy(), pixels_per_cell=(4, 4), cells_per_block=(2, 2))
        fb = hog((b[i].double() / b[i].max()).numpy(), pixels_per_cell=(4, 4), cells_per_block=(2, 2))
        assert got[i].item() == pytest.approx(np.corrcoef(fa, fb)[0, 1], abs=1e-10)
    assert torch.allclose(hog_correlation(a, a), torch.ones(2, dtype=torch.float64))


def test_similarities_bad_input() -> None:
    with pytest.raises(EisError, match="same shape"):
        similarities(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(EisError, match="unknown similarity"):
        similarities(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), ("pearsn",))
    out = similarities(torch.rand(2, 16, 16), torch.rand(2, 16, 16))
    assert set(out) == {"spearman_abs", "spearman_signed", "ssim", "hog"}
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in out.values())
