"""Circuit case specifications: compiled program + variant + ablation type + seed, and their hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from eis.errors import EisError
from eis.zoo.circuits.graph import ABLATIONS
from eis.zoo.circuits.programs import builtin_programs

CIRCUIT_VERSION = "1"  # bump when building or the truth's definition changes, so that caches rebuild
CIRCUIT_FIELDS = {"name", "program", "ablation", "rotate", "distractors", "seed", "n_inputs"}


@dataclasses.dataclass(frozen=True)
class CircuitSpec:
    """One circuit case. ``ablation`` defines the true circuit (zero, mean or resample ablation);
    ``rotate`` applies a random orthogonal residual basis, ``distractors`` adds inert components."""

    name: str
    program: str
    ablation: str = "zero"
    rotate: bool = False
    distractors: bool = False
    seed: int = 0
    n_inputs: int = 64
    population: str | None = None  # circuit cases are never population members
    role: str | None = None

    def validated(self) -> CircuitSpec:
        where = f"circuit case {self.name!r}"
        if self.program not in builtin_programs():
            raise EisError(
                f"{where}: unknown program {self.program!r}; valid: {', '.join(builtin_programs())}"
            )
        if self.ablation not in ABLATIONS:
            raise EisError(f"{where}: unknown ablation {self.ablation!r}; valid: {', '.join(ABLATIONS)}")
        for key in ("rotate", "distractors"):
            if not isinstance(getattr(self, key), bool):
                raise EisError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise EisError(f"{where}: seed must be an integer, got {self.seed!r}")
        if not isinstance(self.n_inputs, int) or not 8 <= self.n_inputs <= 4096:
            raise EisError(f"{where}: n_inputs must be an integer in [8, 4096], got {self.n_inputs!r}")
        return self

    def content(self) -> dict[str, Any]:
        return {
            "circuit_version": CIRCUIT_VERSION,
            "kind": "circuit",
            **{k: getattr(self, k) for k in sorted(CIRCUIT_FIELDS)},
        }

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def circuit_spec(entry: dict[str, Any], where: str) -> CircuitSpec:
    """A validated spec from a suite's ``[[circuit]]`` table."""
    bad = sorted(set(entry) - CIRCUIT_FIELDS)
    if bad:
        raise EisError(
            f"{where}: circuit case {entry.get('name', '?')!r} has unknown field {bad[0]!r}; "
            f"valid: {', '.join(sorted(CIRCUIT_FIELDS))}"
        )
    for key in ("name", "program"):
        if key not in entry:
            raise EisError(f"{where}: a circuit case is missing the field {key!r}")
    return CircuitSpec(**entry).validated()
