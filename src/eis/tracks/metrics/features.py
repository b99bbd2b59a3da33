"""Metrics of the features track: how well found directions and latents match a known dictionary.

``true`` (n, d) are the true feature directions, ``found`` (m, d) a tool's directions, both any norm; every
function is batched over features and latents and returns one value per true feature (float64 numpy),
so that confidence intervals can resample features within cases.

- :func:`abs_cosines`: (n, m) absolute cosine similarity (signs are arbitrary for PCA, ICA, random
  directions; an SAE's are not, but a negated direction is the same feature).
- :func:`max_cosines`: per true feature, the best absolute cosine over all latents; its mean is the mean max
  cosine similarity (MMCS) of Sharkey et al. (2022).
- :func:`matched_cosines`: per true feature, the absolute cosine of the latent a one-to-one matching gives it
  (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``, maximising the total); a feature left
  without a latent (fewer latents than features) scores 0. The mean is the matched MCC of O'Neill (2024),
  as SynthSAEBench reports it: unlike MMCS, one latent cannot be credited for two features.
- :func:`detection`: per true feature, ROC-AUC and F1 of the latent that best matches it (highest absolute
  cosine), its activation signed by that cosine, against whether the feature fires on each held-out input.
  F1 counts the latent as firing where its (signed) activation is above 0; ROC-AUC needs no threshold
  (Mann-Whitney, ties given half credit). Both are NaN for a feature that fires on every input or none.
- :func:`explained_variance` and :func:`l0`: reconstruction and sparsity (reported, never used alone to
  rank).
- :func:`auroc_matrix` and :func:`concept_detection`: for labelled concepts without a dictionary (feature
  cases over a language model), each concept's best latent is the one whose activation separates it best
  on the *training* rows (sign-free: max(AUC, 1 - AUC), then oriented), and it is scored on the held-out
  rows: ROC-AUC and F1 of its (oriented) activation above 0. Choosing on the scored rows would credit a
  latent for fitting them.
- :func:`absorption`: per parent feature (hierarchical cases), how much more often the parent's latent is
  silent when a child fires with it than when the parent fires alone (Chanin et al. 2024's absorption:
  a child's latent takes over the parent's direction).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata


def abs_cosines(true: torch.Tensor, found: torch.Tensor) -> np.ndarray:
    """(n, m) absolute cosine similarity between true and found directions (0 for a zero direction)."""
    t = true.double().cpu()
    f = found.double().cpu()
    t = t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)
    f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (t @ f.T).abs().numpy()


def max_cosines(cos: np.ndarray) -> np.ndarray:
    """(n,) per true feature the highest absolute cosine over the latents (MMCS = its mean)."""
    return cos.max(axis=1)


def matched_cosines(cos: np.ndarray) -> np.ndarray:
    """(n,) per true feature the cosine under the best one-to-one matching (0 where none is left)."""
    rows, cols = linear_sum_assignment(cos, maximize=True)
    out = np.zeros(cos.shape[0])
    out[rows] = cos[rows, cols]
    return out


def signed_cosines(true: torch.Tensor, found: torch.Tensor) -> np.ndarray:
    """(n, m) cosine similarity with its sign."""
    t = true.double().cpu()
    f = found.double().cpu()
    t = t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)
    f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (t @ f.T).numpy()


def best_latents(true: torch.Tensor, found: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per true feature, (index of its best-matching latent, the sign of their cosine)."""
    cos = signed_cosines(true, found)
    best = np.abs(cos).argmax(axis=1)
    sign = np.where(cos[np.arange(len(best)), best] >= 0, 1.0, -1.0)
    return best, sign


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k,) ROC-AUC of each column of ``scores`` (rows, k) against bool ``labels`` (rows, k), batched.

    Mann-Whitney U from average ranks (ties count half); NaN for a column with one class only.
    """
    ranks = rankdata(scores, axis=0)
    pos = labels.sum(axis=0).astype(np.float64)
    neg = labels.shape[0] - pos
    u = (ranks * labels).sum(axis=0) - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def auroc_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(m, k) ROC-AUC of every column of ``scores`` (rows, m) against every column of bool ``labels``
    (rows, k): the ranks are computed once per score column; NaN for a label column with one class only."""
    ranks = rankdata(scores, axis=0)
    y = labels.astype(np.float64)
    pos = y.sum(axis=0)
    neg = y.shape[0] - pos
    u = ranks.T @ y - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def f1_columns(fires: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k,) F1 of bool ``fires`` against bool ``labels`` per column; NaN where a column has one class only."""
    tp = (fires & labels).sum(axis=0).astype(np.float64)
    fp = (fires & ~labels).sum(axis=0)
    fn = (~fires & labels).sum(axis=0)
    pos = labels.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return np.where((pos > 0) & (pos < labels.shape[0]), f1, np.nan)


def detection(
    true: torch.Tensor, found: torch.Tensor, activations: torch.Tensor, labels: torch.Tensor
) -> dict[str, np.ndarray]:
    """Per true feature: ``auroc`` and ``f1`` of its best-matching latent (see the module docstring).

    ``activations`` (rows, m) are the latents on held-out inputs, ``labels`` (rows, n) whether each true
    feature fires there.
    """
    best, sign = best_latents(true, found)
    scores = activations.double().cpu().numpy()[:, best] * sign
    y = labels.bool().cpu().numpy()
    return {"auroc": auroc_columns(scores, y), "f1": f1_columns(scores > 0, y)}


def concept_detection(
    train_acts: torch.Tensor, train_labels: torch.Tensor, eval_acts: torch.Tensor, eval_labels: torch.Tensor
) -> dict[str, np.ndarray]:
    """Per concept: ``auroc`` and ``f1`` on the held-out rows of the latent chosen on the training rows,
    ``latent`` its index and ``sign`` its orientation (see the module docstring)."""
    auc = auroc_matrix(train_acts.double().cpu().numpy(), train_labels.bool().cpu().numpy())
    auc = np.where(np.isfinite(auc), auc, 0.5)
    best = np.maximum(auc, 1 - auc).argmax(axis=0)
    sign = np.where(auc[best, np.arange(auc.shape[1])] >= 0.5, 1.0, -1.0)
    scores = eval_acts.double().cpu().numpy()[:, best] * sign
    y = eval_labels.bool().cpu().numpy()
    return {
        "auroc": auroc_columns(scores, y),
        "f1": f1_columns(scores > 0, y),
        "latent": best.astype(np.float64),
        "sign": sign,
    }


def explained_variance(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """1 - total squared error / total variance of ``x`` (rows, d) about its mean."""
    x = x.double().cpu()
    err = ((x - reconstruction.double().cpu()) ** 2).sum()
    var = ((x - x.mean(0)) ** 2).sum()
    return float(1 - err / var) if var > 0 else float("nan")


def l0(activations: torch.Tensor) -> float:
    """Mean number of latents firing (activation above 0) per input."""
    return float((activations > 0).sum(1).double().mean())


def absorption(
    hierarchy: dict[int, list[int]], fires: np.ndarray, labels: np.ndarray, parent_latent: np.ndarray
) -> np.ndarray:
    """(parents,) P(parent's latent silent | parent and a child fire) - P(silent | parent fires alone).

    ``fires`` (rows, m) bool latent firing, ``labels`` (rows, n) bool true firing, ``parent_latent``
    (n,) each true feature's best-matching latent. NaN for a parent never seen in both situations.
    """
    out = []
    for parent, kids in sorted(hierarchy.items()):
        on = labels[:, parent]
        with_child = on & labels[:, kids].any(axis=1)
        alone = on & ~labels[:, kids].any(axis=1)
        silent = ~fires[:, parent_latent[parent]]
        if with_child.sum() == 0 or alone.sum() == 0:
            out.append(np.nan)
            continue
        out.append(float(silent[with_child].mean() - silent[alone].mean()))
    return np.asarray(out, dtype=np.float64)


def chance_matched(true: torch.Tensor, width: int, draws: int = 16, seed: int = 0) -> float:
    """Expected matched MCC of ``width`` random unit directions against ``true`` (Monte Carlo mean)."""
    gen = torch.Generator().manual_seed(seed)
    vals = [
        matched_cosines(abs_cosines(true, torch.randn(width, true.shape[1], generator=gen))).mean()
        for _ in range(draws)
    ]
    return float(np.mean(vals))
