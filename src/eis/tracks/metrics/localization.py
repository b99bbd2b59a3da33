"""Localization metrics: how well a relevance map points at a known pixel mask (e.g. a trojan trigger).

All functions are batched in torch and run on the maps' device. ``maps`` is (N, C, H, W) or (N, H, W) and
``masks`` is (N, H, W) bool; every metric returns a float64 tensor of shape (N,) on the maps' device.

Channel reduction (``reduction``), applied before every metric, turns a (N, C, H, W) map into (N, H, W):

- ``"abs_sum"`` (default): sum over channels of absolute values, the usual choice for gradient maps whose
  sign is not meaningful on its own (Casper et al. 2023 and Quantus' ``abs=True`` setting).
- ``"sum"``: signed sum over channels (keeps the sign; negative evidence counts against the mask).
- ``"max_abs"``: max over channels of absolute values.
- ``"l2"``: Euclidean norm over channels.

A (N, H, W) map is treated as one channel, so ``"abs_sum"``, ``"max_abs"`` and ``"l2"`` take its absolute
value and ``"sum"`` leaves it as is.

Definitions (with a = reduced map flattened to P pixels, M = mask pixels, k = |M|):

- ``pearson``: Pearson correlation between a and the 0/1 mask (Casper et al. 2023's measure).
- ``pointing_game``: whether the pixel of maximal relevance lies in M (Zhang et al. 2018, with zero pixel
  tolerance since our images are 16-32 px wide).
- ``relevance_mass_accuracy``: sum(a over M) / sum(a) (Arras et al. 2022, as in Quantus).
- ``relevance_rank_accuracy``: |top-k pixels of a, intersected with M| / k (Arras et al. 2022, as in Quantus).
- ``auroc``: ROC-AUC of a as a score separating mask pixels from the others, in the Mann-Whitney form
  (fraction of (mask, non-mask) pixel pairs where the mask pixel has the larger value; ties count half).
  Equals ``sklearn.metrics.roc_auc_score(mask, a)``.
- ``topk_iou``: IoU of the top-k pixels of a with M, k = |M| by default.
- ``l1_distance``: mean over pixels of |a' - mask|, a' = a min-max normalised to [0, 1] (Casper et al.
  2023's first metric). The only one where lower is better (``LOWER_IS_BETTER``); the blank map scores k / P.

Ties. Quantus breaks ties in the pointing game in the map's favour (a hit if *any* maximal pixel is in M)
and arbitrarily in rank accuracy (``argsort`` order). Both would reward a constant map: a blank map would
score a pointing-game hit on every input. We instead score ties by their expectation under uniformly
random tie-breaking: the pointing game scores (# maximal pixels in M) / (# maximal pixels), and the top-k
metrics count pixels tied at the k-th value fractionally. Without ties the values equal Quantus'.

Degenerate inputs.

- Constant map: Pearson is undefined (zero variance); we return 0, the value an uninformative map gets in
  expectation. The other metrics take their chance level naturally under the tie rule above (AUROC 0.5,
  pointing game and rank accuracy k / P); L1 distance normalises it to the blank map (all zeros): k / P.
- Map summing to 0 (e.g. all zeros): relevance mass accuracy is 0/0; we return k / P, the value of any
  non-zero constant map. With the signed ``"sum"`` reduction mass accuracy can leave [0, 1], as in Quantus.
- Empty mask or a mask covering the whole image: there is nothing to localise (and AUROC and Pearson are
  undefined), so every metric returns NaN for that input. Callers average with ``nanmean``.

Maps must be finite; the track validates tool outputs before scoring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from eis.errors import EisError

REDUCTIONS = ("abs_sum", "sum", "max_abs", "l2")
METRIC_NAMES = (
    "pearson",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "auroc",
    "topk_iou",
    "l1_distance",
)
LOWER_IS_BETTER = frozenset({"l1_distance"})  # every other metric: higher is better


def reduce_channels(maps: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """Reduce (N, C, H, W) or (N, H, W) maps to (N, H, W) float64 maps with ``reduction``."""
    if maps.ndim == 3:
        maps = maps.unsqueeze(1)
    if maps.ndim != 4:
        raise EisError(f"maps must be (N, C, H, W) or (N, H, W), got shape {tuple(maps.shape)}")
    m = maps.to(torch.float64)
    if reduction == "abs_sum":
        return m.abs().sum(1)
    if reduction == "sum":
        return m.sum(1)
    if reduction == "max_abs":
        return m.abs().amax(1)
    if reduction == "l2":
        return m.pow(2).sum(1).sqrt()
    raise EisError(f"unknown channel reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def _prepare(
    maps: torch.Tensor, masks: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten to (N, P) float64 relevance, (N, P) bool mask, and the (N,) bool 'degenerate mask' flag."""
    a = reduce_channels(maps, reduction)
    if masks.ndim != 3 or masks.shape != a.shape:
        raise EisError(
            f"masks must be (N, H, W) matching the reduced maps {tuple(a.shape)}, got {tuple(masks.shape)}"
        )
    a = a.flatten(1)
    m = masks.to(device=a.device, dtype=torch.bool).flatten(1)
    k = m.sum(1)
    degenerate = (k == 0) | (k == m.shape[1])
    return a, m, degenerate


def _nan_where(values: torch.Tensor, degenerate: torch.Tensor) -> torch.Tensor:
    return torch.where(degenerate, torch.full_like(values, float("nan")), values)


def pearson(maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """Pearson correlation between each reduced map and its 0/1 mask; 0 for a constant map."""
    a, m, degenerate = _prepare(maps, masks, reduction)
    mf = m.to(a.dtype)
    ac = a - a.mean(1, keepdim=True)
    mc = mf - mf.mean(1, keepdim=True)
    sa = ac.pow(2).sum(1).sqrt()
    sm = mc.pow(2).sum(1).sqrt()
    # A map is constant when its spread is rounding noise relative to its magnitude.
    scale = a.abs().amax(1)
    constant = sa <= 1e-12 * scale * a.shape[1] ** 0.5
    r = (ac * mc).sum(1) / torch.where(constant, torch.ones_like(sa), sa * sm)
    r = torch.where(constant, torch.zeros_like(r), r)
    return _nan_where(r, degenerate)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """1 if the maximal pixel is in the mask, else 0; ties score the share of maximal pixels in the mask."""
    a, m, degenerate = _prepare(maps, masks, reduction)
    is_max = a == a.amax(1, keepdim=True)
    hit = (is_max & m).sum(1).to(a.dtype) / is_max.sum(1).to(a.dtype)
    return _nan_where(hit, degenerate)


def relevance_mass_accuracy(
    maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum"
) -> torch.Tensor:
    """Share of the total relevance that falls inside the mask; k / P for a map summing to 0."""
    a, m, degenerate = _prepare(maps, masks, reduction)
    total = a.sum(1)
    inside = (a * m).sum(1)
    chance = m.sum(1).to(a.dtype) / m.shape[1]
    zero = total == 0
    r = torch.where(zero, chance, inside / torch.where(zero, torch.ones_like(total), total))
    return _nan_where(r, degenerate)


def _topk_hits(a: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Expected |top-k(a) ∩ M| per row under uniformly random tie-breaking; k is (N,) in [1, P]."""
    srt = a.sort(1, descending=True).values
    kth = srt.gather(1, (k - 1).unsqueeze(1))  # (N, 1): the k-th largest value
    above = a > kth
    at = a == kth
    n_above = above.sum(1)
    hits_above = (above & m).sum(1).to(a.dtype)
    # (k - n_above) of the pixels tied at the k-th value are taken; each is in M with prob |at ∩ M| / |at|.
    frac_at = (at & m).sum(1).to(a.dtype) / at.sum(1).to(a.dtype)
    return hits_above + (k - n_above).to(a.dtype) * frac_at


def relevance_rank_accuracy(
    maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum"
) -> torch.Tensor:
    """|top-k pixels ∩ mask| / k with k = mask size; ties at the k-th value counted fractionally."""
    a, m, degenerate = _prepare(maps, masks, reduction)
    k = m.sum(1).clamp(min=1)
    r = _topk_hits(a, m, k) / k.to(a.dtype)
    return _nan_where(r, degenerate)


def auroc(maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """ROC-AUC of the map as a mask-pixel detector (Mann-Whitney U / (n_pos n_neg), ties count half)."""
    a, m, degenerate = _prepare(maps, masks, reduction)
    srt = a.sort(1).values
    below = torch.searchsorted(srt, a, right=False)  # number of values < a_i
    upto = torch.searchsorted(srt, a, right=True)  # number of values <= a_i
    rank = (below + upto + 1).to(a.dtype) / 2  # 1-based average rank
    n_pos = m.sum(1).to(a.dtype)
    n_neg = m.shape[1] - n_pos
    u = (rank * m).sum(1) - n_pos * (n_pos + 1) / 2
    r = u / (n_pos * n_neg).clamp(min=1)
    return _nan_where(r, degenerate)


def topk_iou(
    maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum", k: int | None = None
) -> torch.Tensor:
    """IoU between the top-k pixels of the map and the mask; k = mask size by default.

    With ties at the k-th value the intersection is its expectation under random tie-breaking.
    """
    a, m, degenerate = _prepare(maps, masks, reduction)
    n_mask = m.sum(1)
    if k is None:
        kk = n_mask.clamp(min=1)
    else:
        if not 1 <= k <= a.shape[1]:
            raise EisError(f"top-k IoU needs 1 <= k <= {a.shape[1]} (pixels per image), got k={k}")
        kk = torch.full_like(n_mask, k)
    hits = _topk_hits(a, m, kk)
    r = hits / (kk + n_mask).to(a.dtype).sub(hits)
    return _nan_where(r, degenerate)


def l1_distance(maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """Mean over pixels of |a' - mask| with a' the map min-max normalised to [0, 1]; lower is better.

    A constant map normalises to all zeros (the blank map), which scores exactly the mask's share k / P.
    Casper et al. (2023) do not publish their normalisation in the text we have; this is the reading under
    which their first version's finding holds, that only occlusion beats the blank map: for a trigger
    covering 1-4% of the image the blank map's distance is 0.01-0.04, a hard bar: to beat it a map must
    keep near zero on the 96-99% of pixels outside the mask, where every bit of relevance counts against it.
    """
    a, m, degenerate = _prepare(maps, masks, reduction)
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    span = hi - lo
    constant = span <= 1e-12 * torch.maximum(hi.abs(), lo.abs())
    norm = torch.where(
        constant, torch.zeros_like(a), (a - lo) / torch.where(constant, torch.ones_like(span), span)
    )
    r = (norm - m.to(a.dtype)).abs().mean(1)
    return _nan_where(r, degenerate)


METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "pearson": pearson,
    "pointing_game": pointing_game,
    "relevance_mass_accuracy": relevance_mass_accuracy,
    "relevance_rank_accuracy": relevance_rank_accuracy,
    "auroc": auroc,
    "topk_iou": topk_iou,
    "l1_distance": l1_distance,
}


def localization_metrics(
    maps: torch.Tensor, masks: torch.Tensor, reduction: str = "abs_sum"
) -> dict[str, torch.Tensor]:
    """All seven metrics, each a (N,) float64 tensor, keyed by the names in ``METRIC_NAMES``."""
    return {name: fn(maps, masks, reduction) for name, fn in METRICS.items()}
