"""The ``feature_concepts`` track: is there a latent that detects each known concept in a trained model?

Asked of the zoo's feature cases over a language model (source ``lm``): token activations at one hook point,
labelled per token by the generator's latent variables (word category, topic, question) and by the planted
triggers (:mod:`eis.zoo.features.language`); and over an image model (source ``image``): penultimate-layer
activations labelled per image by class, the stamped trigger and, for ``shapes``, the object's colour and
position (:mod:`eis.zoo.features.image`). There is no true dictionary, so recovery metrics (MCC, MMCS)
do not apply; this is AxBench's concept-detection setting (Wu et al. 2025). Supervised tools (the probe,
difference-in-means) get the concepts' labels on the training rows: the ceiling. Unsupervised tools (SAEs,
PCA, ICA, neurons) get none: the auditor's situation. Every tool encodes the training rows and the
held-out rows; per concept, the latent that best separates it on the *training* rows is chosen (sign-free,
then oriented) and scored on the held-out rows (:func:`~eis.tracks.metrics.features.concept_detection`):

- ``auroc`` (headline): mean over concepts of the chosen latent's held-out ROC-AUC;
- ``f1``: its firing (oriented activation above 0) against the concept;
- ``auroc_token`` / ``auroc_topic`` / ``auroc_question`` / ``auroc_trigger`` (lm) and ``auroc_class`` /
  ``auroc_trigger`` / ``auroc_colour`` / ``auroc_position`` (image): the mean over one group of concepts
  (``auroc_trigger``: the planted triggers, the flaw an auditor looks for);
- ``l0`` and, for tools that reconstruct, ``explained_variance`` (held-out rows): reported, never ranked.

Concepts with one class only in either split are left out. Confidence intervals resample cases, then
concepts; the verdict compares each tool with the best control (random directions), paired by case and
concept.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch

from eis.errors import EisError
from eis.stats import CI
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures
from eis.tracks.base import CellResult, Track, register_track
from eis.tracks.features import FeaturesTrack
from eis.tracks.metrics import features as fm
from eis.tracks.sanity import long_table
from eis.zoo.kinds import kind_of

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case

GROUPS = ("token", "topic", "question", "trigger", "class", "colour", "position")
SOURCES = ("lm", "image")  # feature case sources with labelled concepts


def concept_scores(
    found: FoundFeatures,
    n_train: int,
    labels_train: torch.Tensor,
    labels_eval: torch.Tensor,
    concepts: tuple[str, ...],
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[str]]]:
    """(scores, per-concept items, {"concepts": the names scored, "latents": ...}) of one answer whose
    activations hold the ``n_train`` training rows first, then the held-out rows."""
    acts = found.activations
    out = fm.concept_detection(acts[:n_train], labels_train, acts[n_train:], labels_eval)
    both = [bool(y.any() and not y.all()) for y in (*labels_train.T, *labels_eval.T)]
    keep = np.asarray([both[j] and both[len(concepts) + j] for j in range(len(concepts))])
    names = [c for c, k in zip(concepts, keep, strict=True) if k]
    items = {"auroc": out["auroc"][keep], "f1": out["f1"][keep]}
    scores = {k: float(np.mean(v)) if len(v) else math.nan for k, v in items.items()}
    for group in GROUPS:
        vals = [a for c, a in zip(names, items["auroc"], strict=True) if c.split(":")[0] == group]
        if vals:
            scores[f"auroc_{group}"] = float(np.mean(vals))
    scores["l0"] = fm.l0(acts[n_train:])
    chosen = [f"{c}: latent {int(j)}" for c, j, k in zip(concepts, out["latent"], keep, strict=True) if k]
    per_concept = {k: [float(x) for x in v] for k, v in items.items()}
    return scores, per_concept, {"concepts": names, "latents": chosen}


@register_track
class FeatureConceptsTrack(Track):
    """Per-concept detection by a single latent, on feature cases read from a language or image model."""

    name: ClassVar[str] = "feature_concepts"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "features"
    headline: ClassVar[str] = "auroc"
    summary: ClassVar[str] = "held-out ROC-AUC / F1 of the latent chosen on training rows for each concept"
    n_resamples: int = 1000

    def applies_to(self, case: Case) -> bool:
        return kind_of(case) == "features" and case.meta.get("source") in SOURCES

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, FeatureTool):
            raise EisError(
                f"feature_concepts runs features tools; {tool.name!r} is a {tool.family or 'other'} tool"
            )
        truth = case.truth()
        train, held_out = case.activations("train"), case.activations("eval")  # type: ignore[attr-defined]
        labels = truth.labels("train") if tool.supervised else None
        task = FeatureTask(train, torch.cat([train, held_out]), case.width, labels, seed)  # type: ignore[attr-defined]
        found = tool.find(task)
        if not isinstance(found, FoundFeatures):
            raise EisError(f"{tool.name} returned {type(found).__name__}, not FoundFeatures")
        found.check(task, tool.name)
        scores, items, extras = concept_scores(
            found, len(train), truth.labels("train"), truth.labels("eval"), truth.concepts
        )
        if found.reconstruction is not None:
            scores["explained_variance"] = fm.explained_variance(held_out, found.reconstruction[len(train) :])
        scores = {k: v for k, v in scores.items() if math.isfinite(v)}
        flaw = f"{case.meta['source']}/{truth.model_flaw}"
        info = {**extras, "n_latents": int(found.directions.shape[0]), "supervised": tool.supervised}
        return CellResult(scores=scores, flaw=flaw, items=items, extras=info)

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        return FeaturesTrack._verdict(self, tool, flaw, metric, ci, rows)  # type: ignore[arg-type]
