"""A built rule case: the network and its training inputs openly; the rule behind ``truth()``.

Inputs. Images: the training inputs are the digits training split and its four 1-pixel shifts (the
network trained on their rule labels); fresh in-distribution inputs are the held-out test split and its
shifts; off-distribution inputs are blends (the mean) and overlays (the maximum) of two test images.
Tokens: a seeded half of the p x p grid is the training set, the other half the fresh inputs; a finite grid
has no off-distribution inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.zoo import artifact
from eis.zoo.case import Case, default_device, measured_rows
from eis.zoo.datasets import get_dataset
from eis.zoo.rules.models import all_pairs, new_model

SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def shifted(x: torch.Tensor) -> torch.Tensor:
    """``x`` followed by its copies shifted one pixel right, left, down and up (zero fill)."""
    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return torch.cat([x, *(padded[:, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w] for dy, dx in SHIFTS)])


def token_split(p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training pairs, held-out pairs): a seeded half of the grid and the rest."""
    pairs = all_pairs(p)
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    return pairs[perm[: len(pairs) // 2]], pairs[perm[len(pairs) // 2 :]]


def image_inputs(dataset: str, which: str, seed: int = 0) -> torch.Tensor:
    """Image rule inputs: ``train``, ``fresh`` (see the module docstring) or ``off``."""
    data = get_dataset(dataset)
    if which == "train":
        return shifted(data.train_x)
    if which == "fresh":
        return shifted(data.test_x)
    x = data.test_x
    other = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))]
    return torch.cat([(x + other) / 2, torch.maximum(x, other)])


@dataclasses.dataclass(frozen=True)
class RuleTruth:
    """The sealed truth of a rule case: the rule (JSON parameters) and the measured bars."""

    rule: dict[str, Any]
    spec: dict[str, Any]
    measured: dict[str, float]

    @property
    def kind(self) -> str:
        return "rule"


class RuleCase(Case):
    """A network trained on a secret rule. ``model()``, ``train_inputs()``, ``fresh_inputs()``,
    ``off_inputs()`` and ``meta`` (kind, family, network accuracy) may be seen; ``truth()`` is sealed."""

    @property
    def kind(self) -> str:
        return self.meta["rule_kind"]

    @property
    def family(self) -> str:
        return self.meta["family"]

    def describe(self) -> list[tuple[str, Any]]:
        """Its spec, the secret rule and the measured bars."""
        truth = self.truth()
        keys = ("name", "id", "rule_kind", "family", "dataset", "arch", "seed")
        rows = [(k, self.meta.get(k)) for k in keys]
        return [*rows, ("rule", truth.rule), *measured_rows(truth)]

    def model(self, device: str | torch.device | None = None) -> nn.Module:
        model = new_model(self.kind, self.meta)
        model.load_state_dict(artifact.load_weights(self.root))
        return model.eval().to(device or default_device())

    def train_inputs(self) -> torch.Tensor:
        """The inputs the network was trained on (their labels are not given)."""
        if self.kind == "image":
            return image_inputs(self.dataset, "train")
        return token_split(self.meta["p"], self.meta["seed"])[0]

    def fresh_inputs(self) -> torch.Tensor:
        """Held-out in-distribution inputs, never trained on."""
        if self.kind == "image":
            return image_inputs(self.dataset, "fresh")
        return token_split(self.meta["p"], self.meta["seed"])[1]

    def off_inputs(self) -> torch.Tensor | None:
        """Off-distribution inputs (images only; None for tokens)."""
        return image_inputs(self.dataset, "off", self.meta["seed"]) if self.kind == "image" else None

    def inputs(self, n: int | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh (``test``) or ``train`` inputs and the network's labels for them (never the rule's)."""
        from eis.zoo.rules.models import network_labels

        x = (self.train_inputs() if split == "train" else self.fresh_inputs())[:n]
        return x, network_labels(self.model("cpu"), x).long()

    def truth(self) -> RuleTruth:  # type: ignore[override]
        return _read_truth(self.root)


@functools.cache
def _read_truth(root: Path) -> RuleTruth:
    info, _ = artifact.load_truth(root)
    return RuleTruth(info["rule"], info["spec"], info["measured"])
