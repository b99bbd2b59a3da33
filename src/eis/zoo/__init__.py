"""The model zoo: datasets x architectures x planted flaws, trained from a seed and cached as artifacts.

    import eis.zoo
    cases = eis.zoo.build_suite("smoke")          # trains what is not cached yet
    case = eis.zoo.load("digits-cnn-patch")       # by name or id
    model, (x, y) = case.model(), case.inputs(64)

Cases come in kinds (image, circuit, rule, ...), each one registered CaseKind: see :mod:`eis.zoo.kinds`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss, build_case, cached, open_case
from eis.zoo.case import Case, Truth
from eis.zoo.kinds import CaseKind, Spec, UnknownKind, kind_of, register_kind, spec_kind
from eis.zoo.spec import CaseSpec, resolve_device
from eis.zoo.suites import builtin_suites, load_suite

if TYPE_CHECKING:
    from eis.zoo.circuits.spec import CircuitSpec
    from eis.zoo.rules.spec import RuleSpec

__all__ = [
    "BarError",
    "BarMiss",
    "Case",
    "CaseKind",
    "CaseSpec",
    "CircuitSpec",
    "RuleSpec",
    "Truth",
    "build_case",
    "build_suite",
    "builtin_suites",
    "kind_of",
    "list_built",
    "load",
    "load_suite",
    "register_kind",
    "suite_cases",
]

# Specs of the kinds registered by import path, imported on first use (keeps `import eis.zoo` light).
_LAZY = {"CircuitSpec": "eis.zoo.circuits.spec", "RuleSpec": "eis.zoo.rules.spec"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def suite_cases(suite: str) -> list[Spec]:
    """The validated specs of a suite (populations expanded)."""
    return load_suite(suite)


def build_suite(
    suite: str,
    *,
    force: bool = False,
    on_progress: Callable[[Spec, float, bool], None] | None = None,
    workers: int = 0,
    device: str = "auto",
    backend: str = "local",
    address: str | None = None,
) -> list[Case]:
    """Build every case of ``suite`` (cache hits cost nothing) and return them in suite order.

    ``on_progress(spec, fraction, cached)`` is called as training goes. workers: 0 = one case at a time in
    this process, N = N worker processes (same weights either way; the CLI's default is one per core).
    device: where to train, ``cpu``, ``cuda`` or ``auto`` (CUDA where present); the device is part of the
    case id, so CPU and GPU builds of one spec are separate artifacts. backend ``ray``: cases train as Ray
    tasks (see :mod:`eis.zoo.pool`). Every case is attempted; the ones that miss their bars are reported
    together in one BarError at the end.
    """
    from eis.zoo.pool import build_specs

    return build_specs(
        load_suite(suite),
        workers=workers,
        force=force,
        on_progress=on_progress,
        device=device,
        backend=backend,
        address=address,
    )


def list_built() -> list[Case]:
    """Every intact case in the cache, sorted by name."""
    out = []
    for root in sorted(artifact.zoo_dir().iterdir()):
        if root.is_dir() and not root.name.startswith("."):
            try:
                out.append(open_case(root))
            except (artifact.CorruptArtifact, UnknownKind):  # damaged, or of a kind not registered here
                continue
    return sorted(out, key=lambda c: c.name)


def load(name_or_id: str) -> Case:
    """A built case by id, unique id prefix, or name.

    A name that a built-in suite defines resolves to that suite's current spec (so stale artifacts from
    older zoo versions with the same name are never picked); other names must match one built case.
    """
    root = artifact.zoo_dir() / name_or_id
    if artifact.CASE_ID_RE.fullmatch(name_or_id) and root.is_dir():  # never a path outside the zoo
        return open_case(root)
    for suite in builtin_suites():
        for spec in load_suite(suite):
            if spec.name == name_or_id:
                case = next((c for s in _on_devices(spec) if (c := cached(s)) is not None), None)
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


def _on_devices(spec: Spec) -> list[Spec]:
    """Where a built-in spec's artifact may be: on this machine's default device or the CPU for kinds
    whose specs carry a device (image cases); as it is for the others (circuit cases are compiled, never
    trained; rule cases train on the CPU)."""
    kind = spec_kind(spec)
    if not kind.devices:
        return [spec]
    return [kind.on_device(spec, d) for d in dict.fromkeys([resolve_device("auto"), "cpu"])]
