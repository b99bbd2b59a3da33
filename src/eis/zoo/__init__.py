"""The model zoo: datasets x architectures x planted flaws, trained from a seed and cached as artifacts.

import eis.zoo
cases = eis.zoo.build_suite("smoke")          # trains what is not cached yet
case = eis.zoo.load("digits-cnn-patch")       # by name or id
model, (x, y) = case.model(), case.inputs(64)
"""

from __future__ import annotations

from collections.abc import Callable

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss, build_case, cached, open_case
from eis.zoo.case import Case, Truth
from eis.zoo.circuits.spec import CircuitSpec
from eis.zoo.spec import CaseSpec
from eis.zoo.suites import builtin_suites, load_suite

__all__ = [
    "BarError",
    "BarMiss",
    "Case",
    "CaseSpec",
    "CircuitSpec",
    "Truth",
    "build_case",
    "build_suite",
    "builtin_suites",
    "list_built",
    "load",
    "load_suite",
    "suite_cases",
]


def suite_cases(suite: str) -> list[CaseSpec | CircuitSpec]:
    """The validated specs of a suite (populations expanded)."""
    return load_suite(suite)


def build_suite(
    suite: str, *, force: bool = False, on_progress: Callable[[CaseSpec, float, bool], None] | None = None
) -> list[Case]:
    """Build every case of ``suite`` (cache hits cost nothing) and return them in suite order.

    ``on_progress(spec, fraction, cached)`` is called as training goes. Every case is attempted; the
    ones that miss their bars are reported together in one BarError at the end.
    """
    cases, misses = [], []
    for spec in load_suite(suite):
        hit = cached(spec) if not force else None
        if hit is not None:
            cases.append(hit)
            if on_progress:
                on_progress(spec, 1.0, True)
            continue
        try:
            case, _ = build_case(
                spec,
                force=force,
                progress=(lambda f, s=spec: on_progress(s, f, False)) if on_progress else None,
            )
            cases.append(case)
        except BarError as exc:
            misses.extend(exc.misses)
    if misses:
        raise BarError(misses)
    return cases


def list_built() -> list[Case]:
    """Every intact case in the cache, sorted by name."""
    out = []
    for root in sorted(artifact.zoo_dir().iterdir()):
        if root.is_dir() and not root.name.startswith("."):
            try:
                out.append(open_case(root))
            except artifact.CorruptArtifact:
                continue
    return sorted(out, key=lambda c: c.name)


def load(name_or_id: str) -> Case:
    """A built case by id, unique id prefix, or name.

    A name that a built-in suite defines resolves to that suite's current spec (so stale artifacts from
    older zoo versions with the same name are never picked); other names must match one built case.
    """
    root = artifact.zoo_dir() / name_or_id
    if root.is_dir():
        return open_case(root)
    for suite in builtin_suites():
        for spec in load_suite(suite):
            if spec.name == name_or_id:
                case = cached(spec)
                if case is None:
                    raise EisError(f"case {name_or_id!r} is not built yet; run `eis zoo build {suite}`")
                return case
    built = list_built()
    matches = [c for c in built if c.name == name_or_id] or [c for c in built if c.id.startswith(name_or_id)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise EisError(f"case {name_or_id!r} is ambiguous: {', '.join(c.id for c in matches)}; use a full id")
    raise EisError(
        f"unknown case {name_or_id!r}; built cases: {', '.join(c.name for c in built) or '(none)'}"
    )
