"""Exhaustive search over a rule family's parameters for the rule most consistent with given labels.

Every family is searched exactly: each candidate feature (a template, a rectangle, an axis; a pair
(a, b), band widths, one band) gets its best threshold(s) from sorted statistics and cumulative counts,
many candidates at once in torch. Ties go to the first candidate. Measured
(``benchmarks/bench_rule_search.py``, one thread): batching the candidates makes the ``linear_mod`` search
2.2x faster than one (a, b) at a time, and gains nothing on the image families (0.7-0.9x), where each
candidate is already one sort of 7,000 statistics. Used by the ``grammar_search`` control
(on the network's answers) and by white-box solvers that pick a candidate from the weights and leave only
the thresholds to fit.
"""

from __future__ import annotations

from typing import Any

import torch

from eis.errors import EisError
from eis.zoo.rules.grammar import REGION_STEP, centroid_stat, templates

AXES = ("row", "col")


def regions(side: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every rectangle with corners on the :data:`REGION_STEP` grid of a ``side`` x ``side`` image."""
    edges = range(0, side + 1, REGION_STEP)
    spans = [(a, b) for a in edges for b in edges if a < b]
    return [(r, c) for r in spans for c in spans]


def best_split(stats: torch.Tensor, labels: torch.Tensor, band: bool) -> tuple[torch.Tensor, ...]:
    """Best threshold(s) per column of ``stats`` (N, K) for bool ``labels`` (N,).

    ``band=False``: label = stat > t. ``band=True``: label = lo <= stat <= hi. Returns (agreement (K,),
    lo (K,), hi (K,)); for one-sided rules ``hi`` is unused and ``lo`` is t. Thresholds lie half-way between
    neighbouring sorted values.
    """
    n = stats.shape[0]
    s, order = stats.double().sort(0)
    w = torch.where(labels[order], 1, -1)  # +1 per positive, -1 per negative, in sorted order
    c = torch.cat([torch.zeros_like(w[:1]), w.cumsum(0)])  # c[k] = sum of w[:k]
    n_neg = int((~labels).sum())
    pad = torch.cat([s[:1] - 1, s, s[-1:] + 1])  # s with sentinels: pad[k] = s[k - 1]
    mid = (pad[:-1] + pad[1:]) / 2  # mid[k] lies between s[k-1] and s[k]
    if not band:  # positives are the top N - k: gain = (sum of w over [k, n)) = c[n] - c[k]
        gain = c[-1:] - c
        best, k = gain.max(0)
        return (best + n_neg).double() / n, mid.gather(0, k[None])[0], mid.gather(0, k[None])[0]
    low, arg = c.cummin(0)  # best start i <= j for every end j
    gain = c - low
    best, j = gain.max(0)
    i = arg.gather(0, j[None])[0]
    lo, hi = mid.gather(0, i[None])[0], mid.gather(0, j[None])[0]
    return (best + n_neg).double() / n, lo, hi


def image_candidates(family: str, x: torch.Tensor, dataset: str) -> tuple[list[Any], torch.Tensor]:
    """The family's candidate features and their (N, K) statistics on ``x``."""
    if family == "template_band":
        t = templates(dataset)
        return list(range(len(t))), x.flatten(1).float() @ t.flatten(1).float().T
    if family == "region_mass":
        regs = regions(x.shape[-1])
        ii = torch.nn.functional.pad(x.double().mean(1).cumsum(1).cumsum(2), (1, 0, 1, 0))  # integral image
        r0, r1, c0, c1 = (torch.tensor(v) for v in zip(*[(*r, *c) for r, c in regs], strict=True))
        sums = ii[:, r1, c1] - ii[:, r0, c1] - ii[:, r1, c0] + ii[:, r0, c0]
        return regs, sums / ((r1 - r0) * (c1 - c0))
    if family == "centroid":
        return list(AXES), torch.stack([centroid_stat(x, a) for a in AXES], 1)
    raise EisError(f"{family!r} is not an image rule family")


def image_rule(family: str, dataset: str, candidate: Any, lo: float, hi: float) -> dict[str, Any]:
    """The rule JSON for one candidate and its thresholds (rounded to 4 decimals)."""
    rule: dict[str, Any] = {"family": family, "dataset": dataset}
    if family == "template_band":
        return rule | {"template": int(candidate), "lo": round(lo, 4), "hi": round(hi, 4)}
    if family == "region_mass":
        (r0, r1), (c0, c1) = candidate
        return rule | {"rows": [r0, r1], "cols": [c0, c1], "threshold": round(lo, 4)}
    return rule | {"axis": candidate, "threshold": round(lo, 4)}


def search_image(
    family: str, x: torch.Tensor, labels: torch.Tensor, dataset: str, only: list[int] | None = None
) -> tuple[dict[str, Any], float]:
    """The image rule of ``family`` most consistent with ``labels`` on ``x`` (among candidates ``only``)."""
    cands, stats = image_candidates(family, x, dataset)
    if only is not None:
        cands, stats = [cands[k] for k in only], stats[:, only]
    parts = [
        best_split(stats[:, i : i + 128], labels.bool(), band=family == "template_band")
        for i in range(0, stats.shape[1], 128)
    ]
    agree, lo, hi = (torch.cat(v) for v in zip(*parts, strict=True))
    k = int(agree.argmax())
    return image_rule(family, dataset, cands[k], float(lo[k]), float(hi[k])), float(agree[k])


def _threshold_counts(values: torch.Tensor, labels: torch.Tensor, p: int) -> torch.Tensor:
    """(K, p + 1): agreement counts of "value < c" for c = 0..p, per row of ``values`` (K, N) in [0, p)."""
    pos = torch.zeros(values.shape[0], p, dtype=torch.long)
    pos.scatter_add_(1, values, labels.long().expand_as(values).contiguous())
    tot = torch.zeros_like(pos).scatter_add_(1, values, torch.ones_like(values))
    cum_pos = torch.cat([torch.zeros_like(pos[:, :1]), pos.cumsum(1)], 1)
    cum_neg = torch.cat([torch.zeros_like(tot[:, :1]), (tot - pos).cumsum(1)], 1)
    n_neg = int((~labels.bool()).sum())
    return cum_pos + (n_neg - cum_neg)


def linear_mod_rule(
    pairs: torch.Tensor, labels: torch.Tensor, p: int, ab: torch.Tensor | None = None
) -> tuple[dict[str, Any], float]:
    """Best (a, b, c) for (a x + b y) mod p < c; over every (a, b) or the rows of ``ab`` (K, 2)."""
    if ab is None:
        ab = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    best: tuple[float, tuple[int, int, int]] = (-1.0, (0, 0, 0))
    for start in range(0, len(ab), 256):  # bounded memory: 256 x N values at a time
        chunk = ab[start : start + 256]
        values = (chunk[:, :1] * pairs[:, 0] + chunk[:, 1:] * pairs[:, 1]) % p
        counts = _threshold_counts(values, labels, p)
        flat = int(counts.argmax())
        k, c = divmod(flat, p + 1)
        if (score := float(counts[k, c]) / len(pairs)) > best[0]:
            best = (score, (int(chunk[k, 0]), int(chunk[k, 1]), c))
    a, b, c = best[1]
    return {"family": "linear_mod", "p": p, "a": a, "b": b, "c": c}, best[0]


def stripes_rule(pairs: torch.Tensor, labels: torch.Tensor, p: int) -> tuple[dict[str, Any], float]:
    """Best (wx, wy) for (x // wx + y // wy) odd, over wx, wy in [1, p]."""
    w = torch.arange(1, p + 1)
    qx = pairs[:, 0][None] // w[:, None]  # (p, N)
    qy = pairs[:, 1][None] // w[:, None]
    odd = (qx[:, None] + qy[None]) % 2 == 1  # (p, p, N)
    agree = (odd == labels.bool()).double().mean(-1)
    k = int(agree.argmax())
    return {"family": "stripes", "p": p, "wx": k // p + 1, "wy": k % p + 1}, float(agree.flatten()[k])


def bands_rule(pairs: torch.Tensor, labels: torch.Tensor, p: int) -> tuple[dict[str, Any], float]:
    """Best bands for (x in [x0, x1)) xor (y in [y0, y1)): every x band, then the best y band for it
    exactly (per-column gains and a maximum-sum interval). Unqueried cells of the grid count for nothing."""
    m = torch.zeros(p, p)  # +1 where the network says 1, -1 where 0, 0 where not queried
    m[pairs[:, 0], pairs[:, 1]] = torch.where(labels.bool(), 1.0, -1.0)
    spans = torch.tensor([(a, b) for a in range(p) for b in range(a + 1, p + 1)])
    idx = torch.arange(p)
    inside = ((idx >= spans[:, :1]) & (idx < spans[:, 1:])).double()  # (S, p)
    sign = 2 * inside - 1  # +1 inside the x band (label flips with the y band), -1 outside
    base = sign @ m.double()  # (S, p): agreement per y column when y is outside the y band
    gain = -2 * base  # switching column y into the y band turns its agreement from base to -base
    c = torch.cat([torch.zeros(len(spans), 1, dtype=torch.float64), gain.cumsum(1)], 1)
    low, arg = c.cummin(1)
    best_gain, j = (c - low).max(1)
    total = base.sum(1) + best_gain
    s = int(total.argmax())
    i = int(arg[s, j[s]])
    y = [i, int(j[s])] if int(j[s]) > i else [0, 0]
    agree = (float(total[s]) + len(pairs)) / (2 * len(pairs))
    return {"family": "bands", "p": p, "x": spans[s].tolist(), "y": y}, agree


def search_token(
    family: str, pairs: torch.Tensor, labels: torch.Tensor, p: int
) -> tuple[dict[str, Any], float]:
    """The token rule of ``family`` most consistent with ``labels`` on ``pairs``."""
    if family == "linear_mod":
        return linear_mod_rule(pairs, labels, p)
    if family == "stripes":
        return stripes_rule(pairs, labels, p)
    if family == "bands":
        return bands_rule(pairs, labels, p)
    raise EisError(f"{family!r} is not a token rule family")
