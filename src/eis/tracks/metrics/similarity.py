"""Similarity between two batches of relevance maps, as used by the sanity checks of Adebayo et al. (2018).

Every function takes two map batches ``a`` and ``b`` of the same shape, (N, C, H, W) or (N, H, W), reduces
channels with :func:`eis.tracks.metrics.localization.reduce_channels` and returns a float64 tensor (N,) on
``a``'s device, one value per pair of maps:

- ``spearman_abs``: Spearman rank correlation of the absolute maps (channel ``abs_sum``), ties given their
  average rank (as ``scipy.stats.spearmanr``). The paper's main measure: sign-free, scale-free.
- ``spearman_signed``: Spearman rank correlation of the signed maps (channel ``sum``).
- ``ssim``: structural similarity (Wang et al. 2004) of the absolute maps, each rescaled to [0, 1] by its
  maximum (the paper's normalisation), with ``skimage.metrics.structural_similarity``'s defaults: a 7x7
  uniform window, sample covariance, K1 = 0.01, K2 = 0.03, data range 1, mean over the windows that fit
  inside the image (skimage pads, then crops the border that padding touched; the result is the same).
- ``hog``: Pearson correlation between the histogram-of-oriented-gradients features
  (``skimage.feature.hog``: 9 orientations, cells of max(2, side // 4) pixels, 2x2-cell blocks, L2-Hys)
  of the two rescaled absolute maps: the paper's measure of whether the *edges* of a map survive.

Degenerate pairs, where a correlation is undefined because a map is constant: 1.0 when both maps are
equal (a map that ignores the model is as similar as it can be), else 0.0 (the map changed completely).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import hog as _skimage_hog

from eis.errors import EisError
from eis.tracks.metrics.localization import reduce_channels

SSIM_WIN = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _flat_pair(a: torch.Tensor, b: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise EisError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra = reduce_channels(a.detach(), reduction)
    rb = reduce_channels(b.detach().to(a.device), reduction)
    return ra.flatten(1), rb.flatten(1)


def rowwise_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of (N, P) ``a`` with the same row of ``b`` (degenerate rules above)."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    da = a - a.mean(1, keepdim=True)
    db = b - b.mean(1, keepdim=True)
    na = da.norm(dim=1)
    nb = db.norm(dim=1)
    scale_a = a.abs().amax(1).clamp_min(1e-300)
    scale_b = b.abs().amax(1).clamp_min(1e-300)
    flat_a = na <= 1e-12 * scale_a * a.shape[1] ** 0.5
    flat_b = nb <= 1e-12 * scale_b * b.shape[1] ** 0.5
    r = (da * db).sum(1) / (na * nb).clamp_min(1e-300)
    degenerate = flat_a | flat_b
    same = torch.isclose(a, b, rtol=1e-9, atol=0.0).all(1)
    fallback = torch.where(same, torch.ones_like(r), torch.zeros_like(r))
    return torch.where(degenerate, fallback, r.clamp(-1.0, 1.0))


def rank_rows(x: torch.Tensor) -> torch.Tensor:
    """Ranks of each row of (N, P) ``x`` (0-based, ties get their average rank), batched in torch."""
    n, p = x.shape
    s, idx = x.sort(dim=1, stable=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = (new.cumsum(1) - 1 + torch.arange(n, device=x.device)[:, None] * p).flatten()
    pos = torch.arange(p, device=x.device, dtype=torch.float64).expand(n, p).flatten()
    lo = torch.zeros(n * p, dtype=torch.float64, device=x.device).scatter_reduce(
        0, gid, pos, "amin", include_self=False
    )
    hi = torch.zeros(n * p, dtype=torch.float64, device=x.device).scatter_reduce(
        0, gid, pos, "amax", include_self=False
    )
    avg = ((lo + hi) / 2)[gid].view(n, p)
    return torch.empty_like(avg).scatter_(1, idx, avg)


def spearman(a: torch.Tensor, b: torch.Tensor, *, absolute: bool = True) -> torch.Tensor:
    """Spearman rank correlation per pair of maps, of absolute (default) or signed channel sums."""
    fa, fb = _flat_pair(a, b, "abs_sum" if absolute else "sum")
    r = rowwise_pearson(rank_rows(fa), rank_rows(fb))
    # Ranks forget the values of a constant map: decide degenerate pairs on the maps themselves.
    flat = (fa == fa[:, :1]).all(1) | (fb == fb[:, :1]).all(1)
    same = torch.isclose(fa, fb, rtol=1e-9, atol=0.0).all(1)
    return torch.where(flat, same.to(r.dtype), r)


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the absolute maps."""
    return spearman(a, b, absolute=True)


def spearman_signed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the signed maps."""
    return spearman(a, b, absolute=False)


def normalize_abs(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) absolute channel sums rescaled to [0, 1] by each map's maximum (all-zero maps stay 0)."""
    m = reduce_channels(maps.detach(), "abs_sum")
    top = m.flatten(1).amax(1).clamp_min(1e-300)
    return m / top[:, None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per pair of max-rescaled absolute maps (skimage defaults, batched in torch)."""
    if a.shape != b.shape:
        raise EisError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = normalize_abs(a).unsqueeze(1)
    y = normalize_abs(b.to(a.device)).unsqueeze(1)
    if min(x.shape[-2:]) < SSIM_WIN:
        raise EisError(f"ssim needs maps at least {SSIM_WIN}x{SSIM_WIN}, got {tuple(x.shape[-2:])}")

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, SSIM_WIN, stride=1)

    np_ = SSIM_WIN**2
    cov_norm = np_ / (np_ - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def hog_features(maps: torch.Tensor) -> np.ndarray:
    """HOG feature vectors (N, D) of the max-rescaled absolute maps (parameters in the module docstring)."""
    m = normalize_abs(maps).cpu().numpy()
    side = min(m.shape[-2:])
    cell = max(2, side // 4)
    if side < 2 * cell:
        raise EisError(f"hog needs maps at least {2 * cell} pixels wide, got {tuple(m.shape[-2:])}")
    feats = [
        _skimage_hog(
            img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), block_norm="L2-Hys"
        )
        for img in m
    ]
    return np.stack(feats)


def hog_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of HOG features per pair of maps."""
    if a.shape != b.shape:
        raise EisError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa = torch.from_numpy(hog_features(a))
    fb = torch.from_numpy(hog_features(b))
    return rowwise_pearson(fa, fb).to(a.device)


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spearman_abs": spearman_abs,
    "spearman_signed": spearman_signed,
    "ssim": ssim,
    "hog": hog_correlation,
}


def similarities(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """All (or the named) similarity measures between two map batches, each a float64 (N,) tensor."""
    names = tuple(SIMILARITIES) if names is None else names
    bad = [n for n in names if n not in SIMILARITIES]
    if bad:
        raise EisError(f"unknown similarity {bad[0]!r}; valid: {', '.join(SIMILARITIES)}")
    return {n: SIMILARITIES[n](a, b) for n in names}
