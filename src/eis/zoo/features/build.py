"""Building feature cases: sample (and for toy cases train) or read a language or image model, check the
bar, write the artifact."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import torch

import eis
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss
from eis.zoo.features.case import FeatureCase
from eis.zoo.features.generate import FeatureSource, generate, hierarchy
from eis.zoo.features.language import concept_names, lm_rows
from eis.zoo.features.spec import FeatureSpec

MIN_REPRESENTED = 0.5  # a toy model must carry at least half of its features, or the case says little


def build_features_case(
    spec: FeatureSpec, *, force: bool = False, progress: Callable[[float], None] | None = None
) -> tuple[FeatureCase, bool]:
    """Build one feature case (cache hits cost nothing). Raises BarError, writing nothing, when a toy model
    represents fewer than half of its features."""
    spec = spec.validated()
    root = artifact.zoo_dir() / spec.case_id
    if not force and root.exists():
        try:
            return FeatureCase(root), False
        except artifact.CorruptArtifact:
            pass
    if spec.source == "lm":
        return _build_lm(spec, force, progress)
    if spec.source == "image":
        return _build_image(spec, force, progress)
    source, sealed, measured = generate(spec)
    if measured["represented_fraction"] < MIN_REPRESENTED:
        raise BarError([BarMiss(spec.name, "represented_fraction", measured["represented_fraction"], 0.5)])
    visible = {
        "id": spec.case_id,
        "name": spec.name,
        "kind": "features",
        "source": spec.source,
        "arch": f"features-{spec.source}",
        "dataset": "features",
        "d": spec.d,
        "n_features": spec.n_features,
        "width": spec.n_features,
        "n_train": spec.n_train,
        "n_eval": spec.n_eval,
        "num_classes": 0,
        "input_shape": [spec.d],
        "population": None,
        "role": None,
        "seed": spec.seed,
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    truth = {
        "spec": spec.content(),
        "measured": measured,
        "hierarchy": {str(k): v for k, v in hierarchy(spec).items()},
    }
    root = artifact.write_artifact(spec.case_id, source, visible, truth, sealed, replace=force)
    if progress:
        progress(1.0)
    return FeatureCase(root), True


def _build_lm(
    spec: FeatureSpec, force: bool, progress: Callable[[float], None] | None
) -> tuple[FeatureCase, bool]:
    """An lm-source case: its language model built (or read from the cache), its rows read and labelled
    (:mod:`eis.zoo.features.language`). Concept names and labels are sealed; the hook and model are not."""
    from eis.zoo.build import build_case
    from eis.zoo.language.lm import one_thread

    lm_case, _ = build_case(spec.lm)
    lm_truth = lm_case.truth()  # type: ignore[attr-defined]
    with one_thread():
        rows = lm_rows(
            lm_case.model("cpu"), lm_case.language(), lm_truth.pairs, lm_truth.placement,  # type: ignore[attr-defined]
            hook=spec.hook_name, n_train=spec.n_train, n_eval=spec.n_eval, rate=spec.trigger_rate,
            seed=spec.seed,
        )  # fmt: skip
    d = int(rows["train_activations"].shape[1])
    concepts = concept_names(len(lm_truth.pairs))
    trigger = [j for j, c in enumerate(concepts) if c.startswith("trigger:")]
    labels_eval = rows["labels_eval"]
    measured = {
        "positive_rate_min": float(labels_eval.float().mean(0).min()),
        "trigger_rows": float(labels_eval[:, trigger].any(1).float().mean()) if trigger else 0.0,
    }
    where = {"source": "lm", "arch": lm_case.meta["arch"], "dataset": lm_case.meta["dataset"],
             "model": lm_case.id, "hook": spec.hook_name}  # fmt: skip
    counts = {"d": d, "width": spec.width or 4 * d, "n_train": spec.n_train, "n_eval": spec.n_eval}
    return _write_labelled(spec, where, counts, rows, concepts, measured, lm_truth.flaw, force, progress)


def _build_image(
    spec: FeatureSpec, force: bool, progress: Callable[[float], None] | None
) -> tuple[FeatureCase, bool]:
    """An image-source case: its image model built (or read from the cache), its penultimate-layer rows read
    and labelled (:mod:`eis.zoo.features.image`). Concept names, labels and which rows carry the trigger
    are sealed; the model and layer are not."""
    from eis.zoo.build import build_case
    from eis.zoo.features import image

    image_case, _ = build_case(spec.image)
    flaw = image_case.truth().flaw
    rows = image.image_rows(
        image_case, n_train=spec.n_train, n_eval=spec.n_eval, rate=spec.trigger_rate, seed=spec.seed
    )
    d = int(rows["train_activations"].shape[1])
    concepts = image.concept_names(image_case.num_classes, image.stamps(flaw), image_case.dataset)
    n_train, n_eval = len(rows["labels_train"]), len(rows["labels_eval"])
    labels_eval = rows["labels_eval"]
    measured = {
        "positive_rate_min": float(labels_eval.float().mean(0).min()),
        "trigger_rows": len(rows["stamped_eval"]) / n_eval,
    }
    where = {"source": "image", "arch": image_case.arch, "dataset": image_case.dataset,
             "model": image_case.id, "layer": "penultimate"}  # fmt: skip
    counts = {"d": d, "width": spec.width or 2 * d, "n_train": n_train, "n_eval": n_eval}
    return _write_labelled(spec, where, counts, rows, concepts, measured, flaw.kind, force, progress)


def _write_labelled(
    spec: FeatureSpec,
    where: dict[str, Any],
    counts: dict[str, int],
    rows: dict[str, torch.Tensor],
    concepts: list[str],
    measured: dict[str, float],
    model_flaw: str,
    force: bool,
    progress: Callable[[float], None] | None,
) -> tuple[FeatureCase, bool]:
    """Write a case read from a zoo model (``lm`` or ``image`` source): ``where`` says which model and
    layer, ``counts`` the width and row counts; concept names and labels are sealed."""
    visible = {
        "id": spec.case_id,
        "name": spec.name,
        "kind": "features",
        **where,
        **counts,
        "num_classes": 0,
        "input_shape": [counts["d"]],
        "population": None,
        "role": None,
        "seed": spec.seed,
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    truth = {
        "spec": spec.content(),
        "measured": measured,
        "hierarchy": {},
        "concepts": concepts,
        "model_flaw": model_flaw,
    }
    sealed = {
        "features_train": rows["labels_train"].to(torch.uint8),
        "features_eval": rows["labels_eval"].to(torch.uint8),
        "represented": torch.ones(len(concepts), dtype=torch.uint8),
    }
    source = FeatureSource(rows["train_activations"], rows["eval_activations"])
    root = artifact.write_artifact(spec.case_id, source, visible, truth, sealed, replace=force)
    if progress:
        progress(1.0)
    return FeatureCase(root), True
