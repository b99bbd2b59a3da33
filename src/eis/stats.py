"""Bootstrap confidence intervals and the "does the tool beat the control" verdict.

Data are hierarchical: items (inputs) nested in groups (cases, i.e. models). We use the two-stage
bootstrap: each resample draws the cases with replacement, then, within every drawn case, its inputs with
replacement; the statistic is the mean over cases of the per-case mean (every case weighs the same, like
the point estimate). Why not the alternatives:

- Pooling inputs across cases treats 32 inputs of one model as 32 independent models. Inputs of one model
  share its weights, so their scores are correlated and a pooled CI is too narrow: it would let a tool
  "beat" a control on the strength of one lucky model.
- Resampling cases only is the textbook choice when there are many cases, but our suites have one to a
  handful of cases per flaw kind; with one case it gives a zero-width interval, i.e. certainty from a
  single model.

The two-stage scheme counts the within-case noise on top of the between-case noise, which slightly
overstates the variance when there are many cases (Davison & Hinkley 1997, sec. 3.8). For a verdict that
is the safe side: it errs toward "within noise". A flat sequence of numbers is the special case of
one-item groups, where it reduces to the ordinary bootstrap.

Intervals are percentile intervals from ``n_resamples`` (default 1000) resamples drawn in one vectorised
numpy operation (chunked to bound memory) from ``numpy.random.default_rng(seed)``: the same data and seed
give the same interval. Non-finite values (a metric undefined on an input) are dropped before resampling;
cases left with no value are dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from eis.errors import EisError

_MAX_ELEMENTS = 4_000_000  # resample chunk size bound, in gathered values


@dataclasses.dataclass(frozen=True)
class CI:
    """A point estimate with its bootstrap interval; ``n`` = groups (cases), ``n_items`` = items (inputs)."""

    mean: float
    lo: float
    hi: float
    n: int
    n_items: int


def ci_columns(ci: CI, margin: CI | None = None) -> dict[str, float | int]:
    """The long-table columns of a CI and, where there is one, of the margin over the best control."""
    nan = float("nan")
    return {
        "mean": ci.mean,
        "lo": ci.lo,
        "hi": ci.hi,
        "n": ci.n,
        "n_items": ci.n_items,
        "margin": margin.mean if margin else nan,
        "margin_lo": margin.lo if margin else nan,
        "margin_hi": margin.hi if margin else nan,
    }


def _as_groups(data: Sequence[float] | Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
    """Groups of finite values; a flat sequence becomes one-item groups."""
    if isinstance(data, np.ndarray) and data.ndim == 1:
        groups = [np.asarray([v], dtype=np.float64) for v in data]
    elif len(data) > 0 and all(np.ndim(g) == 0 for g in data):
        groups = [np.asarray([float(v)], dtype=np.float64) for v in data]
    else:
        groups = [np.asarray(g, dtype=np.float64).ravel() for g in data]
    groups = [g[np.isfinite(g)] for g in groups]
    return [g for g in groups if g.size > 0]


def _boot_means(groups: list[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples,) two-stage bootstrap replicates of the mean of group means."""
    rng = np.random.default_rng(seed)
    g = len(groups)
    counts = np.array([x.size for x in groups])
    width = int(counts.max())
    padded = np.zeros((g, width))
    for i, x in enumerate(groups):
        padded[i, : x.size] = x
    out = np.empty(n_resamples)
    chunk = max(1, _MAX_ELEMENTS // (g * width))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        cases = rng.integers(0, g, size=(b, g))  # stage 1: cases with replacement
        n_in = counts[cases]  # (b, g) items in each drawn case
        u = rng.random((b, g, width))
        items = np.minimum((u * n_in[..., None]).astype(np.int64), n_in[..., None] - 1)  # stage 2
        vals = padded[cases[..., None], items]
        valid = np.arange(width) < n_in[..., None]
        case_means = np.where(valid, vals, 0.0).sum(-1) / n_in
        out[start : start + b] = case_means.mean(-1)
    return out


def _ci(groups: list[np.ndarray], n_resamples: int, level: float, seed: int) -> CI:
    if not 0 < level < 1:
        raise EisError(f"confidence level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise EisError(f"n_resamples must be >= 1, got {n_resamples}")
    if not groups:
        return CI(math.nan, math.nan, math.nan, 0, 0)
    mean = float(np.mean([x.mean() for x in groups]))
    reps = _boot_means(groups, n_resamples, seed)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    # Quantiles of identical replicates can differ from the mean by rounding; keep lo <= mean <= hi.
    return CI(mean, float(min(lo, mean)), float(max(hi, mean)), len(groups), int(sum(x.size for x in groups)))


def bootstrap_ci(
    data: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CI:
    """Mean and percentile bootstrap CI of ``data``: flat values, or a list of per-case item lists.

    >>> bootstrap_ci([[1.0, 1.0], [1.0]]).lo
    1.0
    """
    return _ci(_as_groups(data), n_resamples, level, seed)


def paired_bootstrap_ci(
    a: Sequence[Sequence[float]] | Sequence[float],
    b: Sequence[Sequence[float]] | Sequence[float],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CI:
    """CI of mean(a - b) for two tools scored on the same cases and inputs, item by item.

    ``a`` and ``b`` must align: same number of cases and of items per case, item i of case j being the
    same input for both. Pairs where either value is non-finite are dropped. Resampling the differences
    keeps the pairing, so noise shared by both tools (a hard input, an odd model) cancels.
    """
    if len(a) != len(b):
        raise EisError(f"paired bootstrap needs the same number of cases, got {len(a)} and {len(b)}")
    diffs = []
    for i, (ga, gb) in enumerate(zip(a, b, strict=True)):
        xa = np.atleast_1d(np.asarray(ga, dtype=np.float64))
        xb = np.atleast_1d(np.asarray(gb, dtype=np.float64))
        if xa.shape != xb.shape:
            raise EisError(
                f"paired bootstrap: case {i} has {xa.size} items in one sample, {xb.size} in the other"
            )
        diffs.append(xa - xb)
    return _ci(_as_groups(diffs), n_resamples, level, seed)


def verdict(ci: CI) -> str:
    """The verdict on a CI of (tool - control): "yes" above 0, "no" below 0, else "within noise".

    "n/a" when there is no data. A single item is never enough: its interval has zero width but says
    nothing about noise, so it gives "within noise".
    """
    if ci.n == 0 or math.isnan(ci.lo):
        return "n/a"
    if ci.n_items < 2:
        return "within noise"
    if ci.lo > 0:
        return "yes"
    if ci.hi < 0:
        return "no"
    return "within noise"
