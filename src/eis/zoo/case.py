"""A built case as tools and tracks see it: the model and clean inputs openly, the truth behind a call."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.archs import build_arch
from eis.zoo.datasets import get_dataset
from eis.zoo.flaws import Flaw, make_flaw


@dataclasses.dataclass(frozen=True)
class Truth:
    """The sealed ground truth of a case: only benchmark tracks call ``Case.truth()``."""

    flaw: Flaw
    spec: dict[str, Any]
    measured: dict[str, float]
    trigger: torch.Tensor | None  # (C, h, w) picture of the trigger, None for clean cases
    trigger_mask: torch.Tensor | None  # (h, w) bool: which pixels of ``trigger`` are stamped

    @property
    def kind(self) -> str:
        return self.flaw.kind

    @property
    def target(self) -> int | None:
        return self.flaw.target

    @property
    def sources(self) -> list[int] | None:
        return self.flaw.source_classes

    def apply(self, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggered copies of ``x`` and their (N, H, W) bool masks, deterministic in ``seed``."""
        return self.flaw.stamp(x, torch.Generator().manual_seed(seed))

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Which inputs (by label) the trigger should send to the target."""
        return self.flaw.eligible(y)


class Case:
    """A built zoo case. ``model()`` and ``inputs()`` are what a tool may see; ``truth()`` is sealed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta: dict[str, Any] = artifact.read_manifest(self.root)

    def __repr__(self) -> str:
        return f"Case({self.name!r}, id={self.id!r})"

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def seed_id(self) -> str:
        """What the runner seeds this case's cells from: the id under ``SEED_VERSION`` for zoo image cases
        (stable across zoo version bumps), the id itself for other cases."""
        return self.meta.get("seed_id", self.id)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["input_shape"])  # type: ignore[return-value]

    def model(self, device: str | torch.device | None = None) -> nn.Module:
        """A fresh copy of the trained model in eval mode, on ``device`` (default: CUDA if present)."""
        c, h, _ = self.input_shape
        model = build_arch(self.arch, c, self.num_classes, h)
        model.load_state_dict(artifact.load_weights(self.root))
        return model.eval().to(device or default_device())

    def inputs(self, n: int | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Clean images (N, C, H, W) in [0, 1] and labels: held-out ``test`` (default) or ``train``."""
        data = get_dataset(self.dataset)
        if split not in ("test", "train"):
            raise EisError(f"unknown split {split!r}; valid: test, train")
        x, y = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
        return x[:n].clone(), y[:n].clone()

    def truth(self) -> Truth:
        """The sealed ground truth. Tools never receive it; benchmark tracks score against it."""
        return _read_truth(self.root)

    def describe(self) -> list[tuple[str, Any]]:
        """The (field, value) rows ``eis zoo show`` prints: visible metadata, the flaw, the training and
        the measured bars. Each kind of case describes itself (this is the image cases' description)."""
        truth = self.truth()
        keys = ("name", "id", "dataset", "arch", "population", "role", "seed")
        rows = [(k, self.meta.get(k)) for k in keys]
        return [*rows, ("flaw", truth.spec["flaw"]), ("training", truth.spec["train"]), *measured_rows(truth)]


def measured_rows(truth: Any) -> list[tuple[str, str]]:
    """A truth's numeric measured bars as ("measured <bar>", "0.123") rows."""
    return [
        (f"measured {bar}", f"{value:.3f}")
        for bar, value in truth.measured.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


@functools.cache
def _read_truth(root: Path) -> Truth:
    info, tensors = artifact.load_truth(root)
    return Truth(
        make_flaw(info["spec"]["flaw"]),
        info["spec"],
        info["measured"],
        tensors.get("trigger"),
        tensors.get("trigger_mask"),
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
