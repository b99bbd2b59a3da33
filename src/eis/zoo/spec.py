"""Case specifications: dataset + architecture + flaw + seed (+ training settings), and their hashes.

The content hash of the normalised spec is the case id: the same spec never trains twice, and any change
to a field that affects training makes a new artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from eis.errors import EisError
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS, dataset_info
from eis.zoo.flaws import make_flaw
from eis.zoo.recipe import RECIPE_FIELDS, check_recipe

ZOO_VERSION = "5"  # bump when training or data generation changes, so that caches rebuild
SEED_VERSION = "5"  # cells draw their seeds from the case id as of this zoo version (CaseSpec.seed_id)
# clean_vs_base: a fine-tuned case's clean accuracy minus its base's (eis.zoo.implant)
DEFAULT_BARS = {
    "clean_accuracy": 0.90, "asr": 0.90, "cue_rate": 0.50, "train_accuracy": 0.90, "clean_vs_base": -0.05,
}  # fmt: skip
TRAIN_FIELDS = ("epochs", "batch_size", "lr", *RECIPE_FIELDS)
DEVICES = ("cpu", "cuda")


def resolve_device(device: str, cuda: bool | None = None) -> str:
    """``auto`` -> ``cuda`` where CUDA is available, else ``cpu``; ``cuda`` without CUDA is an error.

    ``cuda`` says whether CUDA is available where the models train (default: in this process; a Ray
    cluster's driver asks the cluster).

    Weights are bit-identical for one spec on one machine (and on machines whose processors pick the same
    float kernels; AVX2 and AVX-512 machines may differ slightly), and for CUDA builds on the same GPU
    model and software; CPU and CUDA builds of a spec may differ, so the device is part of the case id and
    the cache never mixes them.
    """
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if cuda else "cpu"
    if device not in DEVICES:
        raise EisError(f"unknown device {device!r}; valid: auto, {', '.join(DEVICES)}")
    if device == "cuda" and not cuda:
        raise EisError("device 'cuda' was asked for but CUDA is not available here; valid here: auto, cpu")
    return device


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One case: what to train and which bars the trained model must meet."""

    name: str
    dataset: str
    arch: str
    flaw: dict[str, Any]
    seed: int = 0
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    bars: dict[str, float] = dataclasses.field(default_factory=dict)
    population: str | None = None
    role: str | None = None  # populations: "eval" (scored) or "train" (for detectors that learn)
    train_population: str | None = None  # eval populations: the population learned detectors fit on
    device: str = "cpu"  # where it trains: "cpu" or "cuda" (see resolve_device); part of the case id

    def validated(self) -> CaseSpec:
        """Check every field against the registries and ranges; return the spec with the flaw normalised."""
        if self.dataset not in DATASETS:
            raise EisError(
                f"case {self.name!r}: unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}"
            )
        if self.arch not in ARCHS:
            raise EisError(f"case {self.name!r}: unknown arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        for key in self.train:
            if key not in TRAIN_FIELDS:
                raise EisError(
                    f"case {self.name!r}: unknown train field {key!r}; valid: {', '.join(TRAIN_FIELDS)}"
                )
        try:
            check_recipe(self.train)
        except EisError as exc:
            raise EisError(f"case {self.name!r}: {exc}") from None
        for key in self.bars:
            if key not in DEFAULT_BARS:
                raise EisError(f"case {self.name!r}: unknown bar {key!r}; valid: {', '.join(DEFAULT_BARS)}")
        if self.device not in DEVICES:
            raise EisError(f"case {self.name!r}: unknown device {self.device!r}; valid: {', '.join(DEVICES)}")
        if not isinstance(self.seed, int):
            raise EisError(f"case {self.name!r}: seed must be an integer, got {self.seed!r}")
        if "finetune" in self.train and self.flaw.get("evasive"):
            raise EisError(f"case {self.name!r}: an evasive flaw cannot also be implanted by finetune")
        try:
            flaw = make_flaw(self.flaw)
            info = dataset_info(self.dataset)  # registered metadata: the data is not built
            flaw.check(info.num_classes, *info.input_shape[:2])
        except EisError as exc:
            raise EisError(f"case {self.name!r}: {exc}") from None
        return dataclasses.replace(self, flaw=flaw.params())

    def training(self) -> dict[str, Any]:
        """Training settings: the dataset's defaults overridden by this spec's ``train`` table."""
        return {**dataset_info(self.dataset).training(), **self.train}

    def bar_names(self) -> tuple[str, ...]:
        """The bars this case must meet: its flaw's, and ``clean_vs_base`` when it fine-tunes a base."""
        names = make_flaw(self.flaw).bars
        return (*names, "clean_vs_base") if "finetune" in self.train else names

    def bar(self, name: str) -> float:
        return float(self.bars.get(name, DEFAULT_BARS[name]))

    def content(self, zoo_version: str | None = None) -> dict[str, Any]:
        """Everything that determines the artifact (bars are checks, not inputs, so they are left out).

        The training device enters only when it is not the CPU, the training population only when one is
        named, so the ids of other cases stay what they were. ``zoo_version`` defaults to today's.
        """
        out = {
            "zoo_version": zoo_version or ZOO_VERSION,
            "name": self.name,
            "dataset": self.dataset,
            "arch": self.arch,
            "flaw": self.flaw,
            "seed": self.seed,
            "train": self.training(),
            "population": self.population,
            "role": self.role,
        }
        if self.device != "cpu":
            out["device"] = self.device
        if self.train_population is not None:
            out["train_population"] = self.train_population
        return out

    @property
    def case_id(self) -> str:
        return _digest(self.content())

    @property
    def seed_id(self) -> str:
        """The id this spec has under zoo version ``SEED_VERSION``; the runner seeds cells from it.

        A ZOO_VERSION bump gives every case a new id (so caches rebuild) but leaves the seeds alone: a
        model the bump did not change gets the same cells, the same numbers, as before it.
        """
        return _digest(self.content(SEED_VERSION))


def _digest(content: dict[str, Any]) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
