"""Rule case specifications (a suite's ``[[rule]]`` table): family + seed, and their hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from eis.errors import EisError
from eis.zoo.rules.grammar import FAMILIES, kind_of

RULE_VERSION = "1"  # bump when building or the rule families change, so that caches rebuild
RULE_FIELDS = {"name", "family", "seed", "dataset", "p", "epochs", "steps", "bar"}
# Held-out agreement of the network with its rule. Images: 0.93 (12 epochs on the 7,000 training inputs
# reach 0.94-0.95 on template bands, whose two thresholds both cut through the data). Tokens: 0.85,
# because a one-layer transformer trained for a few hundred steps on half the grid generalises to about
# 0.9 on linear_mod rules (it memorises first; grokking to 1.0 takes thousands of steps, too many for a
# CPU suite).
DEFAULT_BARS = {"image": 0.93, "token": 0.85}


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One rule case: a rule drawn from ``family`` with ``seed``, and a network trained on its labels.

    Images: ``dataset`` (digits), ``epochs`` over the training split and its 1-pixel shifts. Tokens:
    pairs in Z_``p``, ``steps`` full-batch steps on a seeded half of the grid.
    """

    name: str
    family: str
    seed: int = 0
    dataset: str = "digits"
    p: int = 59
    epochs: int = 12
    steps: int = 300
    bar: float | None = None
    population: str | None = None  # rule cases are never population members
    role: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.family)

    @property
    def threshold(self) -> float:
        return DEFAULT_BARS[self.kind] if self.bar is None else float(self.bar)

    def validated(self) -> RuleSpec:
        where = f"rule case {self.name!r}"
        if self.family not in FAMILIES:
            raise EisError(f"{where}: unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        for key, low, high in (("seed", 0, 2**31), ("p", 11, 127), ("epochs", 1, 200), ("steps", 1, 20000)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise EisError(f"{where}: {key} must be an integer in [{low}, {high}], got {v!r}")
        if self.kind == "image" and self.dataset != "digits":
            raise EisError(f"{where}: image rules use dataset 'digits', got {self.dataset!r}")
        if self.bar is not None and not (isinstance(self.bar, int | float) and 0 <= self.bar <= 1):
            raise EisError(f"{where}: bar must be a number in [0, 1], got {self.bar!r}")
        return self

    def content(self) -> dict[str, Any]:
        own = {"name", "family", "seed", "bar"} | (
            {"dataset", "epochs"} if self.kind == "image" else {"p", "steps"}
        )
        return {"rule_version": RULE_VERSION, "kind": "rule", **{k: getattr(self, k) for k in sorted(own)}}

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rule_spec(entry: dict[str, Any], where: str) -> RuleSpec:
    """A validated spec from a suite's ``[[rule]]`` table."""
    bad = sorted(set(entry) - RULE_FIELDS)
    if bad:
        raise EisError(
            f"{where}: rule case {entry.get('name', '?')!r} has unknown field {bad[0]!r}; "
            f"valid: {', '.join(sorted(RULE_FIELDS))}"
        )
    for key in ("name", "family"):
        if key not in entry:
            raise EisError(f"{where}: a rule case is missing the field {key!r}")
    return RuleSpec(**entry).validated()
