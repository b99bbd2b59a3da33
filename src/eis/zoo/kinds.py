"""Case kinds: the families of cases the zoo builds, in one registry instead of ``isinstance`` branches.

A :class:`CaseKind` says everything the zoo's generic code (``build_case``, ``open_case``, ``load_suite``,
the build pool, ``eis.zoo.load``) needs to know about one family of cases:

- ``name``: the manifest's ``kind`` (``"image"``, ``"circuit"``, ``"rule"``). Image artifacts written
  before kinds existed have no ``kind`` in their manifest; a missing kind means ``"image"``.
- ``spec``: the spec class (a frozen dataclass with ``name`` and ``case_id``; the case id is its content
  hash, which this module never touches).
- ``tables``: the suite-file tables it reads (``[[case]]`` and ``[[population]]`` for image cases), each
  with a reader ``(entry, where) -> spec | list[spec]``; ``suite_defaults``: whether the suite's
  ``[defaults]`` table is merged into its entries first.
- ``build``: ``(spec, *, force, progress) -> (case, trained_now)``; it owns the cache check and raises
  ``eis.zoo.BarError`` when the model misses a bar.
- ``case``: the :class:`~eis.zoo.case.Case` subclass that opens an artifact folder of this kind.
- ``devices``: whether the spec carries the device it trains on (``spec.device``, part of its id);
  ``names``: the registry names a spec needs where it is built, ``spec -> [(registry, name, what)]``
  (image specs: their DATASETS and ARCHS names, which build worker processes must register too).

Adding a kind = one module that registers a CaseKind::

    from eis.zoo.kinds import CaseKind, register_kind

    register_kind(CaseKind(name="lm", spec=LMSpec, tables={"lm": lm_spec}, build=build_lm_case, case=LMCase))

and is imported before its specs, suite tables or artifacts are used (a module named in ``$EIS_PLUGINS``,
or one a script imports). ``build_case``, ``open_case``, ``load_suite`` and the build pool then handle the
kind with no change to eis. Any callable or class field may instead be an import path ``"module:attr"``,
resolved on first use: the built-in circuit and rule kinds are registered that way, so ``import eis.zoo``
does not import their modules until a spec, a suite table or an artifact of theirs is used.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from eis.errors import EisError
from eis.registry import Registry

if TYPE_CHECKING:
    from eis.zoo.case import Case

IMAGE = "image"  # the kind of a manifest without one (image artifacts written before kinds existed)
RESERVED_TABLES = ("description", "defaults", "tracks")  # suite-file keys that are not case tables


class Spec(Protocol):
    """What the generic zoo code uses of any kind's spec."""

    @property
    def name(self) -> str: ...

    @property
    def case_id(self) -> str: ...


Reader = Callable[[dict[str, Any], str], Any]  # (suite entry, "suite 'x'") -> spec | list[spec]
Builder = Callable[..., tuple["Case", bool]]  # (spec, *, force, progress) -> (case, trained now)
Needs = Callable[[Any], Sequence[tuple[Registry[Any], str, str]]]  # spec -> [(registry, name, what)]


class UnknownKind(EisError):
    """An artifact or spec of a kind no module in this process has registered."""


@dataclasses.dataclass(frozen=True)
class CaseKind:
    """One family of cases: spec, suite tables, builder and case class (see the module docstring).

    ``spec``, ``case``, ``build``, the table readers and ``names`` may be objects or ``"module:attr"``
    import paths, resolved on first use.
    """

    name: str
    spec: type | str
    tables: Mapping[str, Reader | str]
    build: Builder | str
    case: type[Case] | str
    suite_defaults: bool = False
    devices: bool = False
    names: Needs | str | None = None

    def spec_class(self) -> type:
        return _resolve(self.spec)

    def case_class(self) -> type[Case]:
        return _resolve(self.case)

    def builder(self) -> Builder:
        return _resolve(self.build)

    def read(self, table: str, entry: dict[str, Any], where: str) -> list[Any]:
        """The validated specs of one entry of a suite's ``[[table]]`` (an image population gives many)."""
        out = _resolve(self.tables[table])(entry, where)
        return list(out) if isinstance(out, list | tuple) else [out]

    def on_device(self, spec: Any, device: str) -> Any:
        """``spec`` set to train on ``device``; unchanged for kinds whose specs carry no device."""
        return dataclasses.replace(spec, device=device) if self.devices else spec

    def device(self, spec: Any) -> str:
        """Where ``spec`` trains: its own device, or the CPU for kinds whose specs carry none."""
        return spec.device if self.devices else "cpu"

    def needs(self, spec: Any) -> Sequence[tuple[Registry[Any], str, str]]:
        """The (registry, name, what) entries ``spec`` needs registered wherever it is built."""
        return () if self.names is None else _resolve(self.names)(spec)

    def _loaded_spec_class(self) -> type | None:
        """The spec class if its module is imported already (else no instance of it can exist yet)."""
        if not isinstance(self.spec, str):
            return self.spec
        module = self.spec.partition(":")[0]
        return _resolve(self.spec) if module in sys.modules else None


KINDS: Registry[CaseKind] = Registry("case kind")
_ORDER: list[str] = []  # registration order: the order a suite's tables are read in


def register_kind(kind: CaseKind, *, replace: bool = False) -> CaseKind:
    """Register ``kind``; its table names must not be taken by another kind (or be a reserved key)."""
    taken = {t: k.name for k in kinds() for t in k.tables if k.name != kind.name}
    for table in kind.tables:
        if table in RESERVED_TABLES or table in taken:
            owner = "the suite file itself" if table in RESERVED_TABLES else f"case kind {taken[table]!r}"
            raise ValueError(f"case kind {kind.name!r}: suite table {table!r} is already used by {owner}")
    KINDS.register(kind.name, kind, replace=replace)
    if kind.name not in _ORDER:
        _ORDER.append(kind.name)
    return kind


def kinds() -> list[CaseKind]:
    """The registered kinds, in registration order."""
    return [KINDS.get(n) for n in _ORDER if n in KINDS]


def table_kinds() -> dict[str, CaseKind]:
    """Every suite-file table a registered kind reads, and that kind, in the order suites are read."""
    return {table: kind for kind in kinds() for table in kind.tables}


def kind_named(name: str | None) -> CaseKind:
    """The kind a manifest's ``kind`` names (``None``, as in older image artifacts, is ``"image"``)."""
    name = name or IMAGE
    if name not in KINDS:
        raise UnknownKind(
            f"unknown case kind {name!r}; registered: {_kind_names()} (a kind is registered by "
            "the module that defines it: import it, or name it in $EIS_PLUGINS)"
        )
    return KINDS.get(name)


def spec_kind(spec: Any) -> CaseKind:
    """The kind whose spec class ``spec`` is an instance of (its exact class first, then subclasses)."""
    loaded = [(k, c) for k in kinds() if (c := k._loaded_spec_class()) is not None]
    for test in (lambda c: type(spec) is c, lambda c: isinstance(spec, c)):
        for kind, cls in loaded:
            if test(cls):
                return kind
    if len(loaded) < len(kinds()):  # a spec class reached under another module path: load them all
        for kind in kinds():
            if isinstance(spec, kind.spec_class()):
                return kind
    raise UnknownKind(
        f"{type(spec).__name__} is not the spec of a registered case kind; registered: {_kind_names()}"
    )


def kind_of(case: Any) -> str:
    """The kind of a built case (its manifest's ``kind``; ``"image"`` where there is none)."""
    return case.meta.get("kind") or IMAGE


def _kind_names() -> str:
    return ", ".join(k.name for k in kinds())


@functools.cache
def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"import path {path!r} must look like 'package.module:name'")
    return getattr(importlib.import_module(module), attr)


def _resolve(ref: Any) -> Any:
    return _load(ref) if isinstance(ref, str) else ref


def _image_names(spec: Any) -> list[tuple[Registry[Any], str, str]]:
    from eis.zoo.archs import ARCHS
    from eis.zoo.datasets import DATASETS

    return [(DATASETS, spec.dataset, "dataset"), (ARCHS, spec.arch, "arch")]


# The built-in kinds, in the order a suite's tables are read: image cases and populations first.
register_kind(
    CaseKind(
        name=IMAGE,
        spec="eis.zoo.spec:CaseSpec",
        tables={"case": "eis.zoo.suites:case_entry", "population": "eis.zoo.suites:population_entries"},
        build="eis.zoo.build:build_image_case",
        case="eis.zoo.case:Case",
        suite_defaults=True,
        devices=True,
        names=_image_names,
    )
)
register_kind(  # compiled transformers with a known circuit: never trained, so no device
    CaseKind(
        name="circuit",
        spec="eis.zoo.circuits.spec:CircuitSpec",
        tables={"circuit": "eis.zoo.circuits.spec:circuit_spec"},
        build="eis.zoo.circuits.build:build_circuit_case",
        case="eis.zoo.circuits.case:CircuitCase",
    )
)
register_kind(  # small networks trained on a secret rule, on the CPU
    CaseKind(
        name="rule",
        spec="eis.zoo.rules.spec:RuleSpec",
        tables={"rule": "eis.zoo.rules.spec:rule_spec"},
        build="eis.zoo.rules.build:build_rule_case",
        case="eis.zoo.rules.case:RuleCase",
    )
)
register_kind(  # activations of known sparse features (toy models of superposition), on the CPU
    CaseKind(
        name="features",
        spec="eis.zoo.features.spec:FeatureSpec",
        tables={"features": "eis.zoo.features.spec:features_spec"},
        build="eis.zoo.features.build:build_features_case",
        case="eis.zoo.features.case:FeatureCase",
    )
)
register_kind(  # small causal LMs on a procedural language, with planted behaviours (transformers layout)
    CaseKind(
        name="lm",
        spec="eis.zoo.language.spec:LMSpec",
        tables={
            "lm": "eis.zoo.language.spec:lm_spec",
            "lm_population": "eis.zoo.language.population:lm_population_entries",
        },
        build="eis.zoo.language.build:build_lm_case",
        case="eis.zoo.language.case:LMCase",
    )
)
