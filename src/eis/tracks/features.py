"""The ``features`` track: do dictionary learning, probes and simple baselines find features that are there?

Asked of the zoo's feature cases (activations built from a known dictionary of sparse features). Each tool
gets a :class:`~eis.tools.features.FeatureTask`: the training activations, the held-out activations to
encode and the width (the case's number of true features); supervised tools also get the true features'
firing labels on the training rows, so that a probe is the ceiling rather than a rival. The answer is
scored on the held-out rows against the sealed dictionary, over the features the activations carry
(:mod:`eis.tracks.metrics.features`):

- ``mcc`` (headline): one-to-one matched absolute cosine with the true dictionary (Hungarian matching);
- ``mmcs``: mean max cosine similarity (Sharkey et al. 2022);
- ``auroc`` / ``f1``: detection of each true feature by its best-matching latent;
- ``explained_variance`` and ``l0`` (tools that reconstruct / that have a firing rule): reported, never used
  alone to rank; ``absorption`` on hierarchical cases;
- ``chance_mcc``: the matched MCC that ``width`` random directions reach on this case (a Monte Carlo mean),
  the level the ``random_directions`` control should sit at.

Confidence intervals resample cases, then features within cases. The verdict compares each tool with the
best control, paired by case and feature.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from eis.errors import EisError
from eis.stats import CI, bootstrap_ci, paired_bootstrap_ci, verdict
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures
from eis.tracks.base import CellResult, Track, register_track
from eis.tracks.metrics import features as fm
from eis.tracks.sanity import cell_groups, long_table
from eis.zoo.kinds import kind_of

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case


def fit_on_training_rows(track: str, case: Case, tool: Tool, seed: int) -> tuple[Any, Any, FoundFeatures]:
    """(truth, training labels, found features) of ``tool`` fitted on the case's training rows (labels given
    to supervised tools only), checked; a one-line EisError for a tool of another family or a bad answer."""
    if not isinstance(tool, FeatureTool):
        raise EisError(f"{track} runs features tools; {tool.name!r} is a {tool.family or 'other'} tool")
    truth = case.truth()
    train = case.activations("train")  # type: ignore[attr-defined]
    labels = truth.labels("train")  # type: ignore[attr-defined]
    task = FeatureTask(train, train, case.width, labels if tool.supervised else None, seed)  # type: ignore[attr-defined]
    found = tool.find(task)
    if not isinstance(found, FoundFeatures):
        raise EisError(f"{tool.name} returned {type(found).__name__}, not FoundFeatures")
    found.check(task, tool.name)
    return truth, labels, found


def case_group(spec: dict[str, Any]) -> str:
    """The leaderboard group of a case: its source, and whether its features are hierarchical, correlated or
    power-law distributed."""
    parts = [str(spec.get("source", "synthetic"))]
    if spec.get("parents"):
        parts.append("hierarchical")
    if spec.get("correlation"):
        parts.append("correlated")
    if spec.get("zipf"):
        parts.append("zipf")
    return "/".join(parts)


def score(
    found: FoundFeatures,
    dictionary: Any,
    represented: Any,
    labels_eval: Any,
    inputs: Any,
    hierarchy: dict[int, list[int]],
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """(scores, per-feature items, extras) of one answer against the truth (see the module docstring)."""
    keep = represented.bool().cpu().numpy()
    true = dictionary[keep]
    cos = fm.abs_cosines(true, found.directions)
    items = {
        "mcc": fm.matched_cosines(cos),
        "mmcs": fm.max_cosines(cos),
        **fm.detection(true, found.directions, found.activations, labels_eval[:, keep]),
    }
    scores = {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in items.items()}
    scores["l0"] = fm.l0(found.activations)
    if found.reconstruction is not None:
        scores["explained_variance"] = fm.explained_variance(inputs, found.reconstruction)
    extras: dict[str, Any] = {"n_latents": int(found.directions.shape[0]), "n_true": int(keep.sum())}
    if hierarchy:
        best, sign = fm.best_latents(dictionary, found.directions)
        acts = found.activations.double().cpu().numpy()
        fires = acts > 0  # a latent's own firing rule, whatever its matched sign
        absorbed = fm.absorption(hierarchy, fires, labels_eval.bool().cpu().numpy(), best)
        if np.isfinite(absorbed).any():
            scores["absorption"] = float(np.nanmean(absorbed))
            items["absorption"] = absorbed
    scores = {k: v for k, v in scores.items() if math.isfinite(v)}
    return scores, {k: [float(x) for x in v] for k, v in items.items()}, extras


@register_track
class FeaturesTrack(Track):
    """Feature recovery scored against the known dictionaries of synthetic and toy-model activations."""

    name: ClassVar[str] = "features"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "features"
    headline: ClassVar[str] = "mcc"
    summary: ClassVar[str] = "matched MCC / MMCS vs the known dictionary; detection ROC-AUC / F1; EV and L0"
    n_resamples: int = 1000

    def applies_to(self, case: Case) -> bool:  # lm / image sources have no dictionary: feature_concepts
        return kind_of(case) == "features" and case.meta.get("source") not in ("lm", "image")

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, FeatureTool):
            raise EisError(f"features runs features tools; {tool.name!r} is a {tool.family or 'other'} tool")
        truth = case.truth()  # type: ignore[attr-defined]
        train, inputs = case.activations("train"), case.activations("eval")  # type: ignore[attr-defined]
        labels = truth.labels("train") if tool.supervised else None
        task = FeatureTask(train, inputs, case.width, labels, seed)  # type: ignore[attr-defined]
        found = tool.find(task)
        if not isinstance(found, FoundFeatures):
            raise EisError(f"{tool.name} returned {type(found).__name__}, not FoundFeatures")
        found.check(task, tool.name)
        scores, items, extras = score(
            found, truth.dictionary, truth.represented, truth.labels("eval"), inputs, truth.hierarchy
        )
        chance = fm.chance_matched(truth.dictionary[truth.represented], case.width, seed=seed)  # type: ignore[attr-defined]
        scores["chance_mcc"] = chance
        extras |= {"chance_mcc": chance, "supervised": tool.supervised, "sparse": tool.sparse}
        return CellResult(scores=scores, flaw=case_group(truth.spec), items=items, extras=extras)

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        if metric != self.headline or ci.n == 0:
            return ""
        if bool(rows.loc[rows["tool"] == tool, "control"].iloc[0]):
            return "control"
        mine = cell_groups(rows[rows["tool"] == tool], metric)
        best, best_mean = None, -math.inf
        for name in sorted({str(t) for t in rows.loc[rows["control"].astype(bool), "tool"]}):
            groups = cell_groups(rows[rows["tool"] == name], metric)
            if groups and (mean := float(np.mean([np.mean(v) for v in groups.values()]))) > best_mean:
                best, best_mean = (name, groups), mean
        if best is None:
            return "beats the best control: n/a (no control run)"
        name, theirs = best
        shared = [c for c in mine if c in theirs and len(mine[c]) == len(theirs[c])]
        if not shared:
            return "beats the best control: n/a (no shared cases)"
        d = paired_bootstrap_ci(
            [mine[c] for c in shared], [theirs[c] for c in shared], n_resamples=self.n_resamples
        )
        return f"beats {name}: {verdict(d)} ({metric} {d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}])"

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        if "track" in rows.columns:
            rows = rows[rows["track"] == self.name]
        ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
        if ok.empty:
            return []
        points = []
        for tool, g in ok.groupby("tool", sort=True):
            groups = [v for v in cell_groups(g, "mcc").values() if v]
            l0s = [float(s["l0"]) for s in g["scores"] if "l0" in s]
            if not groups or not l0s:
                continue
            ci = bootstrap_ci(groups, n_resamples=self.n_resamples)
            extras = [e for e in g["extras"] if isinstance(e, dict)]
            sparse = any(e.get("sparse") for e in extras)
            supervised = any(e.get("supervised") for e in extras)
            points.append((str(tool), float(np.mean(l0s)), ci, bool(g["control"].any()), sparse, supervised))
        if not points:
            return []
        chance = [float(s["chance_mcc"]) for s in ok["scores"] if "chance_mcc" in s]
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        for tool, x, ci, control, sparse, supervised in points:
            marker = "x" if control else ("o" if sparse else ("s" if supervised else "^"))
            ax.errorbar(
                [x], [ci.mean], yerr=[[ci.mean - ci.lo], [ci.hi - ci.mean]], fmt=marker, capsize=3,
                label=f"{tool} (control)" if control else tool,
            )  # fmt: skip
        if chance:
            ax.axhline(
                float(np.mean(chance)), color="grey", linestyle="--", linewidth=1, label="chance (random)"
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("L0: latents firing per input (log scale)")
        ax.set_ylabel("matched MCC vs the true dictionary")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()
        caption = (
            "Matched MCC (95% CI over cases and features) against L0, per tool: circles are SAE objectives, "
            "squares supervised baselines (given labels), triangles unsupervised baselines; the dashed line "
            "is the MCC random directions reach"
        )
        return [(caption, fig)]
