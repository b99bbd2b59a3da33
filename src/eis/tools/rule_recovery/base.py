"""The rule-recovery contract: what a solver receives and what it returns, in one place.

A solver receives a :class:`RuleTask` and never the rule nor any label:

- ``model``: the network trained on the secret rule (a small CNN for images; for token pairs a one-layer
  :class:`~eis.zoo.circuits.model.HookedTransformer` reading ``[x, p + y, 2p]``);
- ``kind`` (``image`` or ``token``) and ``family``: the rule family (the hint a person gets too);
- ``inputs``: the inputs the network was trained on (images (N, 1, H, W); pairs (N, 2));
- ``meta``: ``dataset`` (images) or ``p`` (tokens).

``task.answers(x)`` gives the network's labels (batched); ``task.queries()`` is the set a black-box
solver queries: the training inputs for images, every pair of the finite grid for tokens.

It returns a :class:`RuleAnswer`: a labelling function over inputs, the JSON that describes it (its
description length is the length of that JSON) and, for solvers that answer in the family's grammar, the
rule itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import Tool
from eis.zoo.rules.grammar import FAMILIES, evaluate, kind_of
from eis.zoo.rules.models import all_pairs, network_labels


@dataclasses.dataclass
class RuleTask:
    """What a rule-recovery solver receives (see the module docstring)."""

    model: nn.Module
    kind: str
    family: str
    inputs: torch.Tensor
    meta: dict[str, Any]
    batch_size: int = 1024

    def check(self) -> None:
        """Raise EisError (one line) on a malformed task."""
        if self.family not in FAMILIES:
            raise EisError(f"unknown rule family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if kind_of(self.family) != self.kind:
            raise EisError(f"family {self.family!r} is a {kind_of(self.family)} family, not {self.kind!r}")
        if self.kind == "image" and (self.inputs.dim() != 4 or len(self.inputs) == 0):
            raise EisError(
                f"image inputs must be a non-empty (N, C, H, W) tensor, got {tuple(self.inputs.shape)}"
            )
        if self.kind == "token":
            p = self.meta.get("p")
            if not isinstance(p, int) or self.inputs.dim() != 2 or self.inputs.shape[1] != 2:
                raise EisError("token tasks need meta['p'] and (N, 2) pairs as inputs")
            if len(self.inputs) == 0 or self.inputs.min() < 0 or self.inputs.max() >= p:
                raise EisError(f"token pairs must be a non-empty set of values in [0, {p})")
        if self.model.training:
            raise EisError("the model is in train mode; call model.eval() first")

    def answers(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the network's labels for ``x``."""
        return network_labels(self.model, x, self.batch_size)

    def queries(self) -> torch.Tensor:
        """What a black-box solver queries: the training inputs (images) or the whole grid (tokens)."""
        return self.inputs if self.kind == "image" else all_pairs(int(self.meta["p"]))


@dataclasses.dataclass
class RuleAnswer:
    """A solver's answer: ``labeller(x) -> (N,) bool``, its JSON ``description``, and ``rule`` when it is a
    rule of the family's grammar."""

    labeller: Callable[[torch.Tensor], torch.Tensor]
    description: Any
    rule: dict[str, Any] | None = None

    @staticmethod
    def of_rule(rule: dict[str, Any]) -> RuleAnswer:
        return RuleAnswer(lambda x: evaluate(rule, x), rule, rule)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.labeller(x))
        if out.shape != (len(x),):
            raise EisError(
                f"a labeller must return one label per input, shape ({len(x)},); got {tuple(out.shape)}"
            )
        return out.bool().cpu()

    @property
    def description_bytes(self) -> int:
        """Description length: bytes of the compact JSON of ``description``."""
        return len(json.dumps(self.description, separators=(",", ":"), sort_keys=True).encode())


class RuleTool(Tool):
    """Base of the ``rule_recovery`` family: subclasses implement ``solve``; callers call ``recover``."""

    family: ClassVar[str] = "rule_recovery"

    def recover(self, task: RuleTask) -> RuleAnswer:
        """Check the task, then solve it. Must not change the model's weights, mode or hooks."""
        task.check()
        answer = self.solve(task)
        if not isinstance(answer, RuleAnswer):
            raise EisError(f"{self.name} returned {type(answer).__name__}, not a RuleAnswer")
        return answer

    def solve(self, task: RuleTask) -> RuleAnswer:
        raise NotImplementedError
