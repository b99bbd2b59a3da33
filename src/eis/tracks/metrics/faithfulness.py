"""Faithfulness metrics: does removing what a map marks as relevant change the model's output?

Inputs: a model, images ``x`` (N, C, H, W), ``target`` (N,) classes and ``maps`` (N, C, H, W) or (N, H, W).
A pixel's relevance is the signed channel sum of its map; pixels are perturbed whole (all channels) in
order of relevance, most relevant first (MoRF) or least relevant first (LeRF), ties broken by pixel index.
The model's output ``f`` is the softmax probability of the target class (``score="prob"``) or its logit.

- ``deletion_curve`` (Petsiuk et al. 2018; Samek et al. 2017's pixel flipping): f after replacing the first
  round(k P / K) pixels of the order with a baseline, k = 0 .. K (K + 1 points, the first is f(x)).
- ``insertion_curve``: f after copying the first round(k P / K) pixels of ``x`` into the baseline image.
- ``area_under_curve``: trapezoidal area over the removed fraction in [0, 1] (the curve's x axis).
- ``region_perturbation_curve`` and ``aopc`` (Samek et al. 2017): the image is cut into non-overlapping
  r x r regions ranked by summed relevance; x^(k) has its k first regions replaced by uniform noise in
  [0, 1) (drawn once per input, so x^(k) extends x^(k-1)); AOPC = 1/(L+1) sum_{k=0..L} f(x^(0)) - f(x^(k)).
- ``road_curve`` (Rong et al. 2022, ROAD): f after removing a fraction of pixels and filling them by noisy
  linear imputation (``noisy_linear_impute``): each removed pixel equals the weighted mean of its in-image
  8-neighbours (weights 1/6 for edge, 1/12 for corner neighbours, removed neighbours being unknowns of the
  same sparse linear system), plus Gaussian noise (std ``noise``). Imputation hides the removal's shape,
  so the class cannot leak through the mask itself. ``road_auc`` is the mean of the curve over fractions.

Every curve evaluates many (input, perturbation level) pairs per forward pass, ``batch_size`` images at a
time (0 = automatic: 64 on CPU, where larger batches fall out of cache and run up to 2x slower per image,
1024 on a GPU); nothing loops over pixels. Curves are float64 tensors (N, points) on ``x``'s device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu
from torch import nn

from eis.errors import EisError
from eis.tracks.metrics.localization import reduce_channels

SCORES = ("prob", "logit")
BASELINES = ("black", "mean")
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (row offset, column offset, weight) of the 8-neighbourhood used by ROAD's noisy linear imputer.
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)

MakeInputs = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check(x: torch.Tensor, target: torch.Tensor, score: str, batch_size: int) -> None:
    if x.ndim != 4:
        raise EisError(f"inputs must be (N, C, H, W), got shape {tuple(x.shape)}")
    if target.shape != (x.shape[0],):
        raise EisError(f"target must be (N,) = ({x.shape[0]},), got shape {tuple(target.shape)}")
    if score not in SCORES:
        raise EisError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
    if batch_size < 0:
        raise EisError(f"batch_size must be >= 0 (0 = automatic), got {batch_size}")


def pixel_relevance(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, H*W) float64 signed channel-summed relevance, checked against the images' shape."""
    r = reduce_channels(maps, "sum").to(x.device)
    if r.shape != (x.shape[0], *x.shape[2:]):
        raise EisError(
            f"maps must cover the inputs' (N, H, W) = {(x.shape[0], *x.shape[2:])}, got {tuple(maps.shape)}"
        )
    return r.flatten(1)


def removal_rank(relevance: torch.Tensor, *, most_relevant_first: bool = True) -> torch.Tensor:
    """(N, P) long: each pixel's position in the removal order (0 = removed first); ties by pixel index."""
    key = -relevance if most_relevant_first else relevance
    order = key.argsort(dim=1, stable=True)
    pos = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, pos)


@torch.no_grad()
def model_scores(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, score: str = "prob"
) -> torch.Tensor:
    """f(x) for each image: softmax probability (``prob``) or logit of its target class, float64 (N,)."""
    out = model(x)
    if score == "prob":
        out = out.softmax(1)
    return out.gather(1, target[:, None].to(out.device)).squeeze(1).to(torch.float64)


def _curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rank: torch.Tensor,
    counts: torch.Tensor,
    make_inputs: MakeInputs,
    *,
    score: str,
    batch_size: int,
) -> torch.Tensor:
    """f at every (input, level) pair: level s perturbs the pixels with rank < counts[s]; chunked forwards."""
    n, _, h, w = x.shape
    s = counts.numel()
    batch_size = batch_size or (1024 if x.device.type == "cuda" else 64)
    out = torch.empty(n * s, dtype=torch.float64, device=x.device)
    counts = counts.to(x.device)
    for start in range(0, n * s, batch_size):
        flat = torch.arange(start, min(start + batch_size, n * s), device=x.device)
        idx, lvl = flat // s, flat % s
        mask = (rank[idx] < counts[lvl][:, None]).view(-1, 1, h, w)
        out[flat] = model_scores(model, make_inputs(idx, mask, flat), target[idx], score)
    return out.view(n, s)


def _baseline(x: torch.Tensor, baseline: str) -> torch.Tensor:
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    raise EisError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")


def _step_counts(p: int, steps: int) -> torch.Tensor:
    if steps < 1:
        raise EisError(f"steps must be >= 1, got {steps}")
    return torch.round(torch.arange(steps + 1, dtype=torch.float64) * p / steps).long()


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 64,
    most_relevant_first: bool = True,
    baseline: str = "black",
    score: str = "prob",
    batch_size: int = 0,
) -> torch.Tensor:
    """(N, steps + 1) f after deleting (setting to ``baseline``) growing fractions k/steps of the pixels."""
    settings = (steps, most_relevant_first, baseline, score, batch_size)
    return _pixel_curve(model, x, target, maps, *settings, insert=False)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 64,
    most_relevant_first: bool = True,
    baseline: str = "black",
    score: str = "prob",
    batch_size: int = 0,
) -> torch.Tensor:
    """(N, steps + 1) f after inserting growing fractions k/steps of the pixels into the baseline image."""
    settings = (steps, most_relevant_first, baseline, score, batch_size)
    return _pixel_curve(model, x, target, maps, *settings, insert=True)


def _pixel_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    steps: int,
    most_relevant_first: bool,
    baseline: str,
    score: str,
    batch_size: int,
    insert: bool,
) -> torch.Tensor:
    """Deletion (ranked pixels set to the baseline) or insertion (ranked pixels restored into it)."""
    _check(x, target, score, batch_size)
    rank = removal_rank(pixel_relevance(maps, x), most_relevant_first=most_relevant_first)
    fill = _baseline(x, baseline)
    inside, outside = (x, fill) if insert else (fill, x)

    def make(idx: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, inside[idx], outside[idx])

    counts = _step_counts(rank.shape[1], steps)
    return _curve(model, x, target, rank, counts, make, score=score, batch_size=batch_size)


def area_under_curve(curve: torch.Tensor) -> torch.Tensor:
    """(N,) trapezoidal area of (N, K + 1) curves sampled uniformly on [0, 1]."""
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise EisError(f"curves must be (N, points >= 2), got shape {tuple(curve.shape)}")
    inner = curve.sum(1) - (curve[:, 0] + curve[:, -1]) / 2
    return inner / (curve.shape[1] - 1)


def _uniform_noise(shape: Sequence[int], seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=g, dtype=torch.float32).to(device)


def region_perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    region: int = 4,
    steps: int | None = None,
    most_relevant_first: bool = True,
    seed: int = 0,
    score: str = "prob",
    batch_size: int = 0,
) -> torch.Tensor:
    """(N, L + 1) f(x^(k)), k = 0 .. L, r x r regions replaced by uniform noise (default L: all regions)."""
    _check(x, target, score, batch_size)
    if region < 1:
        raise EisError(f"region must be >= 1 pixel, got {region}")
    n, c, h, w = x.shape
    rel = pixel_relevance(maps, x)
    gw = -(-w // region)
    rows = torch.arange(h, device=x.device) // region
    cols = torch.arange(w, device=x.device) // region
    region_of = (rows[:, None] * gw + cols[None, :]).flatten()  # (P,)
    n_regions = int(region_of.max()) + 1
    region_rel = torch.zeros(n, n_regions, dtype=torch.float64, device=x.device).index_add_(1, region_of, rel)
    region_rank = removal_rank(region_rel, most_relevant_first=most_relevant_first)
    rank = region_rank[:, region_of]  # (N, P): a pixel goes with its region
    steps = n_regions if steps is None else steps
    if not 1 <= steps <= n_regions:
        raise EisError(
            f"steps must be in 1..{n_regions} (the number of {region}x{region} regions), got {steps}"
        )
    noise = _uniform_noise((n, c, h, w), seed, x.device).to(x.dtype)

    def make(idx: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, noise[idx], x[idx])

    counts = torch.arange(steps + 1)
    return _curve(model, x, target, rank, counts, make, score=score, batch_size=batch_size)


def aopc(curve: torch.Tensor) -> torch.Tensor:
    """(N,) area over the perturbation curve: mean over k = 0 .. L of f(x^(0)) - f(x^(k))."""
    if curve.ndim != 2:
        raise EisError(f"curves must be (N, L + 1), got shape {tuple(curve.shape)}")
    return (curve[:, :1] - curve).mean(1)


def noisy_linear_impute(
    x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01, seeds: torch.Tensor | None = None
) -> torch.Tensor:
    """Fill the ``removed`` (B, H, W) pixels of ``x`` (B, C, H, W) by ROAD's noisy linear imputation.

    One sparse system for the whole batch (block diagonal, one block per image, C right-hand sides),
    factorised once. ``seeds`` (B,) seeds each image's noise, so results do not depend on batching.
    """
    b, c, h, w = x.shape
    if removed.shape != (b, h, w):
        raise EisError(f"removed must be (B, H, W) = {(b, h, w)}, got {tuple(removed.shape)}")
    m = removed.detach().cpu().numpy().astype(bool).reshape(-1)
    if m.reshape(b, -1).all(1).any():
        raise EisError("noisy linear imputation needs at least one kept pixel per image")
    unk = np.flatnonzero(m)
    if unk.size == 0:
        return x.clone()
    vid = np.full(m.size, -1, dtype=np.int64)
    vid[unk] = np.arange(unk.size)
    bi, hi, wi = np.unravel_index(unk, (b, h, w))
    xv = x.detach().to(torch.float64).cpu().permute(0, 2, 3, 1).reshape(-1, c).numpy()
    diag = np.zeros(unk.size)
    rhs = np.zeros((unk.size, c))
    rows, cols, vals = [], [], []
    for dh, dw, wt in NEIGHBOURS:
        hh, ww = hi + dh, wi + dw
        ok = np.flatnonzero((hh >= 0) & (hh < h) & (ww >= 0) & (ww < w))
        nb = (bi[ok] * h + hh[ok]) * w + ww[ok]
        diag[ok] += wt
        known = ~m[nb]
        rhs[ok[known]] += wt * xv[nb[known]]
        rows.append(ok[~known])
        cols.append(vid[nb[~known]])
        vals.append(np.full(int((~known).sum()), -wt))
    ids = np.arange(unk.size)
    a = csc_matrix(
        (np.concatenate([diag, *vals]), (np.concatenate([ids, *rows]), np.concatenate([ids, *cols]))),
        shape=(unk.size, unk.size),
    )
    sol = splu(a).solve(rhs).reshape(unk.size, c)
    out = xv.copy()
    out[unk] = sol
    res = torch.from_numpy(out).view(b, h, w, c).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
    if noise > 0:
        seeds = torch.arange(b) if seeds is None else seeds.cpu()
        eps = torch.stack(
            [torch.randn((c, h, w), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        ).to(device=x.device, dtype=x.dtype)
        res = torch.where(removed[:, None].to(x.device), res + noise * eps, res)
    return res.contiguous()


def road_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    most_relevant_first: bool = True,
    noise: float = 0.01,
    seed: int = 0,
    score: str = "prob",
    batch_size: int = 0,
) -> torch.Tensor:
    """(N, len(fractions)) f after removing each fraction of pixels and imputing them (ROAD)."""
    _check(x, target, score, batch_size)
    if not fractions or not all(0.0 <= f < 1.0 for f in fractions):
        raise EisError(f"fractions must be a non-empty list of values in [0, 1), got {list(fractions)}")
    rank = removal_rank(pixel_relevance(maps, x), most_relevant_first=most_relevant_first)
    p = rank.shape[1]
    counts = torch.tensor([round(f * p) for f in fractions], dtype=torch.long)

    def make(idx: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return noisy_linear_impute(x[idx], mask[:, 0], noise=noise, seeds=flat.cpu() + seed * 1_000_003)

    return _curve(model, x, target, rank, counts, make, score=score, batch_size=batch_size)


def road_auc(curve: torch.Tensor) -> torch.Tensor:
    """(N,) mean of a ROAD curve over its removal fractions."""
    return curve.mean(1)
