"""Building feature cases: sample (and for toy cases train), check the bar, write the artifact."""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch

import eis
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss
from eis.zoo.features.case import FeatureCase
from eis.zoo.features.generate import generate, hierarchy
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
