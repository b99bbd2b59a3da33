"""A built feature case: the activations openly; the dictionary and per-input features behind ``truth()``."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.case import Case, measured_rows
from eis.zoo.features.generate import FeatureSource, ToyModel

SPLITS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class FeatureTruth:
    """The sealed truth of a feature case.

    ``dictionary`` (n, d): unit direction of each true feature; ``features`` split -> (rows, n) per-input
    feature activations (0 = silent); ``represented`` (n,) bool: the features the activations carry (all,
    for synthetic cases; a toy model may drop some); ``hierarchy``: parent -> child features.

    For an ``lm`` or ``image`` source the columns of ``features`` are labelled concepts (1 = present),
    named by ``concepts`` (see :mod:`eis.zoo.features.language` and :mod:`eis.zoo.features.image`), there
    is no dictionary (``None``), and ``model_flaw`` is the model's flaw.
    """

    dictionary: torch.Tensor | None
    features: dict[str, torch.Tensor]
    represented: torch.Tensor
    hierarchy: dict[int, list[int]]
    spec: dict[str, Any]
    measured: dict[str, float]
    concepts: tuple[str, ...] = ()
    model_flaw: str | None = None  # lm / image source: the model's flaw (``lm_backdoor``, ``patch``, ...)

    @property
    def kind(self) -> str:
        return "features"

    def labels(self, split: str = "train") -> torch.Tensor:
        """(rows, n) bool: which features fire on each input of ``split``."""
        return self.features[split] > 0


class FeatureCase(Case):
    """Activations of known sparse features (or of a language or image model, labelled by known latents).
    ``activations()`` and ``meta`` (source, ``d``, ``width``: the dictionary size tools are asked for, the
    number of true features where there is a dictionary; for an ``lm`` source also its ``model`` and
    ``hook``, for an ``image`` source its ``model`` and ``layer``) may be seen; ``truth()`` is sealed."""

    @property
    def source(self) -> str:
        return self.meta["source"]

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    def describe(self) -> list[tuple[str, Any]]:
        """Its spec and the measured bars (no image grid)."""
        truth = self.truth()
        return [*truth.spec.items(), *measured_rows(truth)]

    def model(self, device: str | torch.device | None = None) -> nn.Module:
        """The activation source (and, for toy cases, the toy model whose hidden layer produced them)."""
        weights = artifact.load_weights(self.root)
        toy = None
        if self.source == "toy":
            toy = ToyModel(int(self.meta["n_features"]), int(self.meta["d"]))
        model = FeatureSource(weights["train_activations"], weights["eval_activations"], toy)
        model.load_state_dict(weights)
        return model.eval().to(device or "cpu")

    def activations(self, split: str = "train") -> torch.Tensor:
        """(rows, d) activations: ``train`` (what tools fit on) or ``eval`` (held out, what is scored)."""
        if split not in SPLITS:
            raise EisError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return _weights(self.root)[f"{split}_activations"].clone()

    def inputs(self, n: int | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out (``test``) or ``train`` activations and placeholder labels (zeros: none are visible)."""
        x = self.activations("train" if split == "train" else "eval")[:n]
        return x, torch.zeros(len(x), dtype=torch.long)

    def truth(self) -> FeatureTruth:  # type: ignore[override]
        return _read_truth(self.root)


@functools.cache
def _weights(root: Path) -> dict[str, torch.Tensor]:
    return artifact.load_weights(root)


@functools.cache
def _read_truth(root: Path) -> FeatureTruth:
    info, tensors = artifact.load_truth(root)
    return FeatureTruth(
        dictionary=tensors.get("dictionary"),
        features={"train": tensors["features_train"], "eval": tensors["features_eval"]},
        represented=tensors["represented"].bool(),
        hierarchy={int(k): list(v) for k, v in info["hierarchy"].items()},
        spec=info["spec"],
        measured=info["measured"],
        concepts=tuple(info.get("concepts", ())),
        model_flaw=info.get("model_flaw"),
    )
