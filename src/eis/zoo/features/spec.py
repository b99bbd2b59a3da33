"""Feature case specifications (a suite's ``[[features]]`` table), validated, and their content hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from eis.errors import EisError

FEATURES_VERSION = "1"  # bump when generation or the toy model's training changes, so that caches rebuild
SOURCES = ("synthetic", "toy")
FEATURE_FIELDS = {
    "name", "source", "seed", "n_features", "d", "p_active", "correlation", "parents", "children",
    "p_child", "magnitude_spread", "noise", "importance_decay", "n_train", "n_eval", "steps", "zipf",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature case: ``n_features`` sparse features embedded in ``d`` < ``n_features`` dimensions.

    - ``source``: ``synthetic`` (activations = features @ dictionary, plus ``noise``) or ``toy`` (the
      hidden layer of Elhage et al.'s ReLU output model, trained for ``steps`` on the features, weighting
      feature i by ``importance_decay ** i``; its learned embedding is the dictionary).
    - Each feature fires with probability ``p_active``; a firing feature has a magnitude drawn uniformly in
      ``[1 - magnitude_spread, 1 + magnitude_spread]``. With ``zipf`` = s > 0 the firing probabilities
      follow a power law instead, feature i's proportional to (i + 1) ** -s, scaled so that their mean is
      ``p_active`` (each capped at 1): a few frequent features and a long tail of rare ones.
    - ``correlation``: features come in pairs whose firing is correlated through a Gaussian copula with
      this latent correlation (0 = independent).
    - Hierarchy (for feature absorption): the first ``parents`` features each have ``children`` child
      features that can fire only when their parent fires, then with probability ``p_child``.
    - ``n_train`` inputs are given to tools to fit on, ``n_eval`` held-out inputs are encoded and scored.
    """

    name: str
    source: str = "synthetic"
    seed: int = 0
    n_features: int = 32
    d: int = 16
    p_active: float = 0.05
    correlation: float = 0.0
    parents: int = 0
    children: int = 2
    p_child: float = 0.5
    magnitude_spread: float = 0.5
    noise: float = 0.0
    importance_decay: float = 1.0
    n_train: int = 8192
    n_eval: int = 2048
    steps: int = 2000
    zipf: float = 0.0
    population: str | None = None  # feature cases are never population members
    role: str | None = None

    @property
    def n_children(self) -> int:
        return self.parents * self.children

    def validated(self) -> FeatureSpec:
        where = f"features case {self.name!r}"
        if self.source not in SOURCES:
            raise EisError(f"{where}: unknown source {self.source!r}; valid: {', '.join(SOURCES)}")
        ints = (
            ("seed", 0, 2**31), ("n_features", 2, 4096), ("d", 2, 1024), ("parents", 0, 1024),
            ("children", 1, 64), ("n_train", 64, 1_000_000), ("n_eval", 32, 1_000_000), ("steps", 1, 100_000),
        )  # fmt: skip
        for key, low, high in ints:
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise EisError(f"{where}: {key} must be an integer in [{low}, {high}], got {v!r}")
        floats = (
            ("p_active", 0.0, 1.0, False), ("correlation", 0.0, 1.0, True), ("p_child", 0.0, 1.0, False),
            ("magnitude_spread", 0.0, 1.0, True), ("noise", 0.0, 10.0, True),
            ("importance_decay", 0.0, 1.0, False), ("zipf", 0.0, 4.0, True),
        )  # fmt: skip
        for key, low, high, closed_low in floats:
            v = getattr(self, key)
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if not ok or not ((low <= v) if closed_low else (low < v)) or not v <= high or v != v:
                bound = "[" if closed_low else "("
                raise EisError(f"{where}: {key} must be a number in {bound}{low}, {high}], got {v!r}")
        if self.correlation >= 1:
            raise EisError(f"{where}: correlation must be below 1, got {self.correlation!r}")
        if self.d >= self.n_features:
            raise EisError(
                f"{where}: d ({self.d}) must be below n_features ({self.n_features}): the features are "
                "embedded in fewer dimensions than there are features"
            )
        if self.parents + self.n_children > self.n_features:
            raise EisError(
                f"{where}: {self.parents} parents with {self.children} children each need "
                f"{self.parents + self.n_children} features, more than n_features ({self.n_features})"
            )
        return self

    def content(self) -> dict[str, Any]:
        own = sorted(FEATURE_FIELDS - {"importance_decay", "steps", "zipf"}) + (
            ["importance_decay", "steps"] if self.source == "toy" else []
        )
        own += ["zipf"] if self.zipf else []  # cases without it keep the ids they had before it existed
        return {
            "features_version": FEATURES_VERSION,
            "kind": "features",
            **{k: getattr(self, k) for k in own},
        }

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def features_spec(entry: dict[str, Any], where: str) -> FeatureSpec:
    """A validated spec from a suite's ``[[features]]`` table."""
    bad = sorted(set(entry) - FEATURE_FIELDS)
    if bad:
        raise EisError(
            f"{where}: features case {entry.get('name', '?')!r} has unknown field {bad[0]!r}; "
            f"valid: {', '.join(sorted(FEATURE_FIELDS))}"
        )
    if "name" not in entry:
        raise EisError(f"{where}: a features case is missing the field 'name'")
    return FeatureSpec(**entry).validated()
