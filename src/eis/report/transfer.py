"""Do the toy tier's rankings transfer to the realistic tier?

A cell's tier is its dataset's (``eis.zoo.datasets.DATASETS.tier``). For every track with results on both
tiers, :func:`tier_transfer` gives each tool's headline score per tier (the mean over cases of the per-case
score, with a percentile bootstrap CI over cases), its change (realistic - toy) and the Spearman rank
correlation between the tools' toy and realistic rankings. Each bootstrap resample draws the cases of each
tier with replacement (the same draw for every tool, so their ranking is recomputed on one resample),
recomputes every tool's score and both rankings, and takes their Spearman correlation; changes use the same
resamples. Intervals are clamped to hold the point estimate, as in ``eis.stats``. The detect track's
headline is an AUROC over a population of models: there a tier's score is the AUROC of the per-model
``score``, resampled clean and trojaned models apart (as the track does).

Case-level intervals are narrower than the leaderboards' two-stage ones (``eis.stats``), most so with few
cases per tier: :func:`tier_transfer` notes tiers with fewer than ``FEW_CASES`` cases.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

from eis.tracks.base import TRACKS, Track, fill_flaw, stored_dict

TOY, REALISTIC = "toy", "realistic"
FEW_CASES = 5
_MAX_ELEMENTS = 4_000_000  # values gathered at once when resampling means
# tracks whose headline is an AUROC over models, scored from each model's score (name -> that score)
POPULATION_SCORES = {"detect": "score"}
# tracks whose headline is the mean over cases of another per-cell score (synthesize: accuracy = mean correct)
CELL_SCORES = {"synthesize": "correct"}
TOOL_COLUMNS = [
    "tool", "control", "toy_mean", "toy_lo", "toy_hi", "toy_n", "realistic_mean", "realistic_lo",
    "realistic_hi", "realistic_n", "change", "change_lo", "change_hi", "toy_rank", "realistic_rank",
]  # fmt: skip
DECISION_COLUMNS = [
    "tool", "tier", "tpr", "tpr_lo", "tpr_hi", "n_trojaned", "fpr", "fpr_lo", "fpr_hi", "n_clean",
]  # fmt: skip


@dataclasses.dataclass
class TrackTransfer:
    """One track's transfer from the toy to the realistic tier (see the module docstring)."""

    track: str
    headline: str
    higher_is_better: bool
    tools: pd.DataFrame  # TOOL_COLUMNS; ranks: 1 = best on that tier
    spearman: float
    spearman_lo: float
    spearman_hi: float
    n_tools: int  # tools ranked on both tiers
    n_cases: dict[str, int]
    decisions: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=DECISION_COLUMNS)
    )
    notes: list[str] = dataclasses.field(default_factory=list)


def with_tiers(rows: pd.DataFrame) -> pd.DataFrame:
    """The scored cells (status ok, the registered tracks' current versions) with a ``tier`` column; tools
    run with several settings labelled apart; where one case ran a track with several track settings, the
    cells of the setting run last."""
    from eis.report.tables import label_tools, track_settings_of
    from eis.runner.plugins import load_builtins
    from eis.zoo.datasets import DATASETS

    load_builtins()  # the track registry: a caller may not have imported the tracks yet

    if rows.empty:
        return rows.assign(tier=pd.Series(dtype=str))
    rows = rows[(rows["status"] == "ok") & rows["track"].isin(list(TRACKS.names()))]
    if "track_version" in rows.columns:
        current = rows["track"].map(lambda t: str(TRACKS.get(t).version))
        rows = rows[rows["track_version"].astype(str) == current]
    if rows.empty:
        return rows.assign(tier=pd.Series(dtype=str))
    if "settings" in rows.columns:
        rows = label_tools(rows)
    if "extras" in rows.columns:
        ts = track_settings_of(rows)
        when = rows["finished_at"] if "finished_at" in rows.columns else pd.Series(0.0, index=rows.index)
        last = pd.DataFrame({"track": rows["track"], "case": rows["case_id"], "ts": ts, "at": when})
        keep = last.sort_values("at").groupby(["track", "case"])["ts"].last()
        rows = rows[[keep[(t, c)] == s for t, c, s in zip(rows["track"], rows["case_id"], ts, strict=True)]]
    return rows.assign(tier=rows["dataset"].astype(str).map(DATASETS.tier))


# ---------------------------------------------------------------- transfer between tiers


def tier_transfer(
    rows: pd.DataFrame, *, flaws: Sequence[str] | None = None, n_resamples: int = 1000, seed: int = 0
) -> list[TrackTransfer]:
    """Per track with scored cells on both tiers (sorted by name), its :class:`TrackTransfer`; ``flaws``:
    only the cases of these flaw kinds (and the clean models of the detect track's populations)."""
    rows = with_tiers(rows)
    if flaws is not None and len(rows):
        rows = rows[rows["flaw"].astype(str).isin([*flaws, "clean"])]
    out = []
    for name in sorted(rows["track"].unique()) if len(rows) else []:
        sub = rows[rows["track"] == name]
        if set(sub["tier"]) >= {TOY, REALISTIC}:
            out.append(_track_transfer(TRACKS.get(str(name))(), sub, n_resamples, seed))
    return out


@dataclasses.dataclass
class _Tier:
    tools: list[str]
    values: np.ndarray  # (cases, tools), NaN where a tool has no score on a case
    labels: np.ndarray | None  # (cases,) 1 = trojaned, for population AUROC tracks


def _tier_data(sub: pd.DataFrame, key: str, population: bool) -> _Tier:
    vals = sub["scores"].map(lambda s: _finite(stored_dict(s).get(key)))
    frame = pd.DataFrame({"case": sub["case_id"].astype(str), "tool": sub["tool"].astype(str), "v": vals})
    table = frame.pivot_table(index="case", columns="tool", values="v", aggfunc="mean").sort_index()
    labels = None
    if population:
        flaw = fill_flaw(sub).drop_duplicates("case_id").set_index("case_id")["flaw"].astype(str)
        labels = np.array([int(flaw.get(c, "") != "clean") for c in table.index])
    return _Tier([str(t) for t in table.columns], table.to_numpy(dtype=np.float64), labels)


def _finite(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _scores(tier: _Tier, idx: np.ndarray) -> np.ndarray:
    """(len(idx), tools) per resample: each tool's mean over the drawn cases, or its AUROC over them."""
    from eis.tracks.metrics.detection import roc_auc

    n_tools = tier.values.shape[1]
    out = np.full((idx.shape[0], n_tools), math.nan)
    if tier.labels is None:
        step = max(1, _MAX_ELEMENTS // max(1, idx.shape[1] * n_tools))
        for start in range(0, idx.shape[0], step):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a tool with no score among the drawn cases
                out[start : start + step] = np.nanmean(tier.values[idx[start : start + step]], axis=1)
        return out
    for b, draw in enumerate(idx):
        y = tier.labels[draw]
        for j in range(n_tools):
            v = tier.values[draw, j]
            ok = np.isfinite(v)
            if 0 < y[ok].sum() < ok.sum():
                out[b, j] = roc_auc(v[ok], y[ok])
    return out


def _draws(tier: _Tier, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, cases) case indices: cases with replacement (clean and trojaned apart for AUROC)."""
    n = tier.values.shape[0]
    if tier.labels is None:
        return rng.integers(0, n, size=(n_resamples, n))
    groups = [np.flatnonzero(tier.labels == k) for k in (1, 0)]
    return np.concatenate([g[rng.integers(0, g.size, size=(n_resamples, g.size))] for g in groups], axis=1)


def _interval(reps: np.ndarray, point: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(point) or reps.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(min(lo, point)), float(max(hi, point))


def _track_transfer(track: Track, sub: pd.DataFrame, n_resamples: int, seed: int) -> TrackTransfer:
    population = track.name in POPULATION_SCORES
    key = POPULATION_SCORES.get(track.name) or CELL_SCORES.get(track.name, track.headline)
    tiers = {t: _tier_data(sub[sub["tier"] == t], key, population) for t in (TOY, REALISTIC)}
    for name, tier in tiers.items():
        if tier.values.size == 0:
            return _without_scores(track, f"no {name} cell stores a {key!r} score")
        if tier.labels is not None and not 0 < tier.labels.sum() < tier.labels.size:
            return _without_scores(track, f"the {name} tier needs clean and trojaned models for an AUROC")
    tools = sorted(set(tiers[TOY].tools) | set(tiers[REALISTIC].tools))
    rng = np.random.default_rng(seed)
    point: dict[str, np.ndarray] = {}
    reps: dict[str, np.ndarray] = {}
    n: dict[str, np.ndarray] = {}
    for name, tier in tiers.items():
        cols = [tier.tools.index(t) if t in tier.tools else -1 for t in tools]
        widen = np.concatenate([tier.values, np.full((tier.values.shape[0], 1), math.nan)], axis=1)[:, cols]
        full = _Tier(tools, widen, tier.labels)
        point[name] = _scores(full, np.arange(widen.shape[0])[None])[0]
        reps[name] = _scores(full, _draws(full, n_resamples, rng))
        n[name] = np.isfinite(widen).sum(0)
    sign = 1.0 if track.higher_is_better else -1.0
    ranks = {t: _ranks(sign * point[t]) for t in tiers}
    control = sub.groupby("tool")["control"].first()
    table = []
    for j, tool in enumerate(tools):
        row: dict[str, Any] = {"tool": tool, "control": bool(control.get(tool, False))}
        for t in (TOY, REALISTIC):
            lo, hi = _interval(reps[t][:, j], point[t][j])
            row |= {f"{t}_mean": point[t][j], f"{t}_lo": lo, f"{t}_hi": hi, f"{t}_n": int(n[t][j])}
        change = point[REALISTIC][j] - point[TOY][j]
        lo, hi = _interval(reps[REALISTIC][:, j] - reps[TOY][:, j], change)
        row |= {"change": change, "change_lo": lo, "change_hi": hi}
        row |= {"toy_rank": ranks[TOY][j], "realistic_rank": ranks[REALISTIC][j]}
        table.append(row)
    frame = pd.DataFrame(table, columns=TOOL_COLUMNS).sort_values(["realistic_rank", "toy_rank", "tool"])
    common = np.isfinite(point[TOY]) & np.isfinite(point[REALISTIC])
    rho, lo, hi = _spearman(point, reps, common)
    cases = {t: int(tiers[t].values.shape[0]) for t in tiers}
    result = TrackTransfer(
        track=track.name,
        headline=track.headline,
        higher_is_better=track.higher_is_better,
        tools=frame.reset_index(drop=True),
        spearman=rho,
        spearman_lo=lo,
        spearman_hi=hi,
        n_tools=int(common.sum()),
        n_cases=cases,
    )
    if common.sum() < 3:
        result.notes.append(f"{int(common.sum())} tools scored on both tiers: no rank correlation below 3")
    for t, k in cases.items():
        if k < FEW_CASES:
            result.notes.append(f"{k} {t} cases: case-level intervals understate the noise")
        if len(set(n[t][n[t] > 0])) > 1:
            result.notes.append(f"tools scored on different {t} cases: each tool's score is over its own")
    if population:
        result.notes.append(
            f"{track.name} cells store each model's score, not a decision at a threshold: transfer is on "
            "the AUROC over models"
        )
        result.decisions = _decisions(sub, tools, result.notes)
    return result


def _without_scores(track: Track, note: str) -> TrackTransfer:
    nan = math.nan
    return TrackTransfer(
        track.name, track.headline, track.higher_is_better, pd.DataFrame(columns=TOOL_COLUMNS), nan, nan, nan,
        0, {}, notes=[note],
    )  # fmt: skip


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = largest; ties share their average rank; NaN stays NaN."""
    out = np.full(values.shape, math.nan)
    ok = np.isfinite(values)
    out[ok] = rankdata(-values[ok])
    return out


def _spearman(
    point: dict[str, np.ndarray], reps: dict[str, np.ndarray], common: np.ndarray
) -> tuple[float, float, float]:
    """Spearman's rho of the two tiers' scores over the ``common`` tools, with its bootstrap interval."""
    if common.sum() < 3:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant ranking: rho is undefined (NaN)
        rho = float(spearmanr(point[TOY][common], point[REALISTIC][common]).statistic)
    a, b = reps[TOY][:, common], reps[REALISTIC][:, common]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    ra, rb = rankdata(a[ok], axis=1), rankdata(b[ok], axis=1)  # ties averaged
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(den > 0, (ra * rb).sum(1) / den, math.nan)
    return (rho, *_interval(boot, rho))


def _decisions(sub: pd.DataFrame, tools: list[str], notes: list[str]) -> pd.DataFrame:
    """TPR and FPR (Wilson 95% intervals) per tier of the detectors whose every cell records a decision
    at the detector's own threshold (``extras.details.flagged``)."""
    out, without = [], []
    for tool in tools:
        cells = sub[sub["tool"] == tool]
        flags = [stored_dict(stored_dict(e).get("details")).get("flagged") for e in cells["extras"]]
        if not flags or not all(isinstance(f, bool) for f in flags):
            without.append(tool)
            continue
        trojaned = (cells["flaw"].astype(str) != "clean").to_numpy()
        flagged = np.array(flags)
        for tier in (TOY, REALISTIC):
            at = (cells["tier"] == tier).to_numpy()
            pos, neg = flagged[at & trojaned], flagged[at & ~trojaned]
            tpr, fpr = _wilson(int(pos.sum()), pos.size), _wilson(int(neg.sum()), neg.size)
            row = {"tool": tool, "tier": tier, "n_trojaned": pos.size, "n_clean": neg.size}
            out.append(
                row
                | dict(zip(("tpr", "tpr_lo", "tpr_hi", "fpr", "fpr_lo", "fpr_hi"), tpr + fpr, strict=True))
            )
    if without:
        notes.append(f"no decision at a threshold stored (TPR/FPR not available): {', '.join(without)}")
    return pd.DataFrame(out, columns=DECISION_COLUMNS)


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """The rate k / n with its Wilson score interval (NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, mid - half), min(1.0, mid + half)
