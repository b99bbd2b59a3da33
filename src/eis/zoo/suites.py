"""Suites: named collections of case specs and detection populations, declared in TOML.

A suite file has an optional ``[defaults]`` table (fields every case inherits), ``[[case]]`` entries and
``[[population]]`` entries. A population expands into ``clean`` clean models and ``flawed`` flawed ones
whose targets and triggers are drawn from the population's seed; every member gets an opaque name
``<population>-<index>``, and members are shuffled so that an index says nothing about the flaw::

    [defaults]
    dataset = "digits"
    arch = "cnn"

    [[case]]
    name = "digits-cnn-patch"
    flaw = { kind = "patch", target = 0, pattern = "checkerboard" }

    [[population]]
    name = "digits-cnn-detect"
    role = "eval"            # "eval" (scored) or "train" (only for detectors that learn)
    clean = 4
    flawed = 4
    flaws = ["patch", "blend"]
    seed = 100
    evasive = false          # true: every member is fine-tuned from its clean twin (eis.zoo.evasive)

An eval population may mix architectures, ``arch = ["cnn", "resnet", "mixer"]``: each architecture gets
the same number of clean and of flawed members (up to one), so the architecture says nothing about the
flaw. Detectors that learn fit on the run's role "train" members of the same dataset and architecture, or
on the population an eval population names with ``train_population = "<name>"`` (needed for mixed ones).

    [[circuit]]              # a compiled transformer with a known circuit (eis.zoo.circuits)
    name = "reverse-zero-realistic"
    program = "reverse"      # reverse, hist, sort_unique, detect_pattern
    ablation = "zero"        # zero, mean or resample: the ablation that defines the true circuit
    rotate = true            # random orthogonal residual basis
    distractors = true       # inert extra heads/MLPs with weights of the same norms

    [[rule]]                 # a network trained on a secret labelling rule (eis.zoo.rules)
    name = "rule-linear-mod-1"
    family = "linear_mod"    # template_band, region_mass, centroid (digits); linear_mod, stripes, bands
    seed = 1                 # draws the rule's parameters
    p = 59                   # token rules: pairs in Z_p (images: dataset = "digits")

A suite may also name the tracks ``eis bench`` runs on it when ``--tracks`` is not given (``default``; else
eis's default tracks) and set tracks' settings (any track's constructor keywords), which ``eis bench``
passes to the runner (:func:`suite_default_tracks`, :func:`suite_track_settings`)::

    [tracks]
    default = ["localize", "repair"]

    [tracks.localize]
    n_inputs = 100

Which case tables a suite may hold is the case kinds' business (:mod:`eis.zoo.kinds`): each registered kind
names its tables and turns an entry into specs, so a kind added outside eis brings its own table.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from eis.errors import EisError
from eis.plugins import load_entry_points
from eis.zoo import triggers
from eis.zoo.datasets import dataset_info
from eis.zoo.flaws import CORNERS, FLAWS
from eis.zoo.kinds import RESERVED_TABLES, Spec, table_kinds
from eis.zoo.spec import CaseSpec

TRACKS_TABLE = "tracks"  # the suite's track settings, not a case table
DEFAULT_TRACKS_KEY = "default"  # in [tracks]: the tracks `eis bench` runs on the suite by default
CASE_FIELDS = {"name", "dataset", "arch", "flaw", "seed", "train", "bars"}
POPULATION_FIELDS = {
    "name", "dataset", "arch", "role", "clean", "flawed", "flaws", "seed", "train", "vary", "bars",
    "evasive", "train_population",
}  # fmt: skip
# Training settings a population may draw per member, clean and flawed alike (metadata parity): lr is
# drawn log-uniformly, integers uniformly, from [low, high].
VARY_FIELDS = {"lr": float, "epochs": int, "batch_size": int}
ROLES = ("eval", "train")
MAX_MEMBERS = 10_000  # clean or flawed models in one population
# natural triggers drawn for populations: shapes that stay recognisable at a few pixels (thin ones such
# as rings, crescents and diamonds made too many random draws miss the attack-success bar on digits)
COMPACT_SHAPES = ("star", "heart", "cross", "circle", "square", "triangle")
# case and population names: they reach file names (`eis zoo show`), terminals and HTML reports
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def builtin_suites() -> list[str]:
    """Names of the suites shipped with eis."""
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files("eis.suites").iterdir()
        if p.name.endswith(".toml")
    )


def suite_path(suite: str) -> Path:
    """A built-in suite's file, or ``suite`` itself when it names a TOML file."""
    if suite.endswith(".toml"):
        path = Path(suite).expanduser()
        if not path.is_file():
            raise EisError(f"suite file {suite!r} does not exist")
        return path
    if suite not in builtin_suites():
        raise EisError(
            f"unknown suite {suite!r}; valid: {', '.join(builtin_suites())} (or a path to a .toml file)"
        )
    return Path(str(resources.files("eis.suites") / f"{suite}.toml"))


def _suite_doc(suite: str) -> dict[str, Any]:
    """The parsed TOML of a suite (a built-in name or a file)."""
    path = suite_path(suite)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EisError(f"suite {suite!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise EisError(f"suite {suite!r} is not UTF-8 text, as TOML must be: {exc}") from None
    except OSError as exc:
        raise EisError(f"cannot read suite {suite!r}: {exc.strerror or type(exc).__name__}") from None


def suite_track_settings(suite: str) -> dict[str, dict[str, Any]]:
    """The suite's ``[tracks.<name>]`` tables: track name -> constructor keywords (empty where none).

    Only their shape is checked here (the zoo knows no tracks); the runner checks the names, keywords and
    values (``eis.runner.cells.track_settings``).
    """
    return _track_tables(_suite_doc(suite), suite)


def suite_default_tracks(suite: str) -> list[str] | None:
    """The tracks the suite's ``[tracks] default = [...]`` names (None where it names none: eis's default
    tracks). Only the shape is checked here; the runner checks the names."""
    return _default_tracks(_suite_doc(suite), suite)


def _default_tracks(doc: dict[str, Any], suite: str) -> list[str] | None:
    tracks = doc.get(TRACKS_TABLE, {})
    names = tracks.get(DEFAULT_TRACKS_KEY) if isinstance(tracks, dict) else None
    if names is None:
        return None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise EisError(
            f"suite {suite!r}: [{TRACKS_TABLE}] {DEFAULT_TRACKS_KEY} must be a non-empty list of track "
            f'names, like {DEFAULT_TRACKS_KEY} = ["localize", "repair"]; got {names!r}'
        )
    return [str(n) for n in names]


def _track_tables(doc: dict[str, Any], suite: str) -> dict[str, dict[str, Any]]:
    tracks = doc.get(TRACKS_TABLE, {})
    ok = isinstance(tracks, dict) and all(
        isinstance(v, dict) for k, v in tracks.items() if k != DEFAULT_TRACKS_KEY
    )
    if not ok:
        raise EisError(
            f"suite {suite!r}: {TRACKS_TABLE!r} must hold one table per track, like [tracks.localize] "
            f'with n_inputs = 100 (and optionally {DEFAULT_TRACKS_KEY} = ["localize", ...])'
        )
    _default_tracks(doc, suite)
    return {str(name): dict(v) for name, v in tracks.items() if name != DEFAULT_TRACKS_KEY}


def load_suite(suite: str) -> list[Spec]:
    """The validated case specs of a suite (populations expanded): table by table, in the order the case
    kinds are registered (image cases, image populations, circuits, rules, then kinds added outside eis),
    each table in file order. The installed plugins (entry points) are imported first: their datasets,
    architectures, flaws and case kinds may appear in the file."""
    load_entry_points()
    doc = _suite_doc(suite)
    tables = table_kinds()
    valid = [*RESERVED_TABLES, *tables]  # RESERVED_TABLES holds TRACKS_TABLE
    bad = sorted(set(doc) - set(valid))
    if bad:
        raise EisError(f"suite {suite!r}: unknown top-level key {bad[0]!r}; valid: {', '.join(valid)}")
    _track_tables(doc, suite)
    defaults, where = doc.get("defaults", {}), f"suite {suite!r}"
    if not isinstance(defaults, dict):
        raise EisError(f'{where}: defaults must be a table of fields every case inherits, like arch = "cnn"')
    specs: list[Spec] = []
    for table, kind in tables.items():
        entries = doc.get(table, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise EisError(f"{where}: {table!r} must be an array of tables, written [[{table}]]")
        for entry in entries:  # kinds other than image take no [defaults] (they are image fields)
            if isinstance(entry, dict) and "name" in entry:
                check_name(entry["name"], where, table)
            specs.extend(kind.read(table, {**defaults, **entry} if kind.suite_defaults else entry, where))
    # a spec that names other cases of the suite (a features case reading an [[lm]] case) resolves them
    specs = [s.with_suite(specs, where) if hasattr(s, "with_suite") else s for s in specs]
    trainers = {s.population for s in specs if getattr(s, "role", None) == "train"}
    for s in specs:
        if getattr(s, "train_population", None) not in (None, *trainers):
            raise EisError(
                f"suite {suite!r}: population {s.population!r} names train_population "
                f"{s.train_population!r}, which is not a population with role 'train' in the suite; "
                f"valid: {', '.join(sorted(trainers)) or 'none'}"
            )
    for s in specs:  # expanded names (population members), and those of kinds added outside eis
        check_name(s.name, where, "case")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EisError(f"suite {suite!r}: case name {dupes[0]!r} is used more than once")
    return specs


def check_name(name: Any, where: str, what: str = "case") -> None:
    """Refuse, in one line, a case or population name that is not a plain file-name-safe word."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise EisError(f"{where}: {what} name {name!r} is not valid; {NAME_RULE}")


def _require(where: str, entry: dict[str, Any], fields: set[str], what: str) -> None:
    bad = sorted(set(entry) - fields)
    if bad:
        raise EisError(
            f"{where}: {what} {entry.get('name', '?')!r} has unknown field {bad[0]!r}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    for key in ("name", "dataset", "arch"):
        if key not in entry:
            raise EisError(f"{where}: a {what} is missing the field {key!r}")
    _check_types(
        f"{where}: {what} {entry['name']!r}", entry, ("dataset", "arch") if what == "case" else ("dataset",)
    )


def _check_types(where: str, entry: dict[str, Any], names: tuple[str, ...]) -> None:
    """One-line errors for fields of the wrong type or range in an image case or population entry."""
    for key in names:
        if not isinstance(entry[key], str):
            raise EisError(f"{where}: field {key!r} must be a name (a string), got {entry[key]!r}")
    if "seed" in entry and not _is_int(entry["seed"]):
        raise EisError(f"{where}: field 'seed' must be an integer, got {entry['seed']!r}")
    train = entry.get("train", {})
    if not isinstance(train, dict):
        raise EisError(
            f"{where}: field 'train' must be a table like {{epochs = 20, lr = 0.001}}, got {train!r}"
        )
    for key in ("epochs", "batch_size"):
        if key in train and not (_is_int(train[key]) and train[key] >= 1):
            raise EisError(f"{where}: train.{key} must be an integer >= 1, got {train[key]!r}")
    if "lr" in train and not (_is_number(train["lr"]) and 0 < train["lr"] < math.inf):
        raise EisError(f"{where}: train.lr must be a number > 0, got {train['lr']!r}")
    bars = entry.get("bars", {})
    if not isinstance(bars, dict) or not all(_is_number(v) and 0 <= v <= 1 for v in bars.values()):
        raise EisError(
            f"{where}: field 'bars' must be a table of numbers in [0, 1] like {{asr = 0.9}}, got {bars!r}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def case_entry(entry: dict[str, Any], where: str) -> CaseSpec:
    """The validated spec of a suite's ``[[case]]`` entry (``[defaults]`` merged in already)."""
    entry = {k: v for k, v in entry.items() if k in CASE_FIELDS or k not in POPULATION_FIELDS}
    _require(where, entry, CASE_FIELDS, "case")
    if not isinstance(entry.get("flaw", {}), dict):
        raise EisError(
            f"{where}: case {entry['name']!r} field 'flaw' must be a table like {{kind = \"patch\"}}"
        )
    entry.setdefault("flaw", {"kind": "clean"})
    _check_flaw_types(f"{where}: case {entry['name']!r}", entry["flaw"])
    return CaseSpec(**entry).validated()


# flaw fields by their annotation: (test, what is valid); the flaws' own checks then test the ranges
FLAW_FIELD_TYPES = {
    "int": (lambda v: _is_int(v), "an integer"),
    "int | None": (lambda v: _is_int(v), "an integer"),
    "float": (lambda v: _is_number(v), "a number"),
    "str": (lambda v: isinstance(v, str), "a name (a string)"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "list[int] | None": (lambda v: isinstance(v, list) and all(map(_is_int, v)), "a list of integers"),
    "tuple[float, float, float]": (
        lambda v: isinstance(v, list) and all(map(_is_number, v)),
        "a list of numbers",
    ),
}


def _check_flaw_types(where: str, flaw: dict[str, Any]) -> None:
    """One-line errors for a flaw table whose kind is not a name or whose fields have the wrong type."""
    import dataclasses

    kind = flaw.get("kind")
    if not isinstance(kind, str) or kind not in FLAWS:
        raise EisError(f"{where}: flaw kind {kind!r} is not valid; valid: {', '.join(FLAWS.names())}")
    types = {f.name: str(f.type) for f in dataclasses.fields(FLAWS.get(kind))}
    for key, value in flaw.items():
        test, what = FLAW_FIELD_TYPES.get(types.get(key, ""), (lambda v: True, ""))
        if not test(value):
            raise EisError(f"{where}: flaw field {key!r} must be {what}, got {value!r}")


def population_entries(entry: dict[str, Any], where: str) -> list[CaseSpec]:
    """The validated member specs of a suite's ``[[population]]`` entry (``[defaults]`` merged in)."""
    _require(where, entry, POPULATION_FIELDS, "population")
    name, role = entry["name"], entry.get("role", "eval")
    if role not in ROLES:
        raise EisError(f"{where}: population {name!r} role {role!r} is not valid; valid: {', '.join(ROLES)}")
    kinds = entry.get("flaws", ["patch", "blend"])
    if not isinstance(kinds, list) or not kinds:
        raise EisError(f'{where}: population {name!r} flaws must be a non-empty list like ["patch", "blend"]')
    for kind in kinds:
        if not isinstance(kind, str) or kind not in FLAWS or kind in ("clean", "label_permutation"):
            raise EisError(
                f"{where}: population {name!r} flaw {kind!r} is not valid; valid: "
                f"{', '.join(k for k in FLAWS.names() if k not in ('clean', 'label_permutation'))}"
            )
    n_clean, n_flawed = entry.get("clean", 0), entry.get("flawed", 0)
    if not (
        _is_int(n_clean)
        and _is_int(n_flawed)
        and 0 <= n_clean <= MAX_MEMBERS
        and 0 <= n_flawed <= MAX_MEMBERS
    ):
        raise EisError(
            f"{where}: population {name!r} clean and flawed must be integers in [0, {MAX_MEMBERS}], got "
            f"{n_clean!r} and {n_flawed!r}"
        )
    if n_clean + n_flawed == 0:
        raise EisError(f"{where}: population {name!r} needs clean >= 0, flawed >= 0 and at least one model")
    seed = entry.get("seed", 0)
    rng = random.Random(seed)
    num_classes = dataset_info(entry["dataset"]).num_classes
    archs = _archs(where, name, entry["arch"])
    flaws = [({"kind": "clean"}, archs[i % len(archs)]) for i in range(n_clean)] + [
        (random_flaw(kinds[i % len(kinds)], rng, num_classes), archs[i // len(kinds) % len(archs)])
        for i in range(n_flawed)
    ]
    rng.shuffle(flaws)
    evasive = entry.get("evasive", False)
    if evasive not in (True, False):
        raise EisError(f"{where}: population {name!r} field 'evasive' must be true or false")
    if evasive:  # every member, clean ones too, goes through the same evasive fine-tuning
        flaws = [({**f, "evasive": True}, a) for f, a in flaws]
    trainer = entry.get("train_population")
    if trainer is not None and (role != "eval" or not isinstance(trainer, str)):
        raise EisError(
            f"{where}: population {name!r}: train_population must be the name of a train population, "
            "given on an eval population"
        )
    vary = _vary(where, name, entry.get("vary", {}))
    common = {k: entry[k] for k in ("dataset", "bars") if k in entry}
    specs = []
    for i, (flaw, arch) in enumerate(flaws):
        member = seed * 1000 + i
        train = {**entry.get("train", {}), **_draw(vary, random.Random(member))}
        spec = CaseSpec(
            f"{name}-{i:03d}",
            arch=arch,
            flaw=flaw,
            seed=member,
            train=train,
            population=name,
            role=role,
            train_population=trainer,
            **common,
        )
        specs.append(spec.validated())
    return specs


def _archs(where: str, name: str, arch: Any) -> list[str]:
    """A population's architectures: one name, or a non-empty list of distinct names (a mixed population)."""
    archs = [arch] if isinstance(arch, str) else arch
    ok = isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)
    if not ok or len(set(archs)) != len(archs):
        raise EisError(
            f"{where}: population {name!r} arch must be a name or a list of distinct names like "
            f'["cnn", "resnet"], got {arch!r}'
        )
    return archs


def _vary(suite_where: str, name: str, vary: Any) -> dict[str, tuple[float, float]]:
    """Check a population's ``vary`` table: {setting = [low, high]} over :data:`VARY_FIELDS`."""
    where = f"{suite_where}: population {name!r} vary"
    if not isinstance(vary, dict):
        raise EisError(f"{where} must be a table like {{lr = [0.001, 0.004], epochs = [20, 30]}}")
    out = {}
    for key, bounds in vary.items():
        if key not in VARY_FIELDS:
            raise EisError(f"{where} has unknown setting {key!r}; valid: {', '.join(sorted(VARY_FIELDS))}")
        number = _is_int if VARY_FIELDS[key] is int else _is_number  # epochs = [0.5, 1] would draw 0 epochs
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(number(b) for b in bounds)
        if not ok or not 0 < bounds[0] <= bounds[1] < math.inf:
            kind = "integers" if VARY_FIELDS[key] is int else "numbers"
            raise EisError(f"{where}.{key} must be [low, high] with 0 < low <= high, got {bounds!r}; {kind}")
        out[key] = (bounds[0], bounds[1])
    return out


def _draw(vary: dict[str, tuple[float, float]], rng: random.Random) -> dict[str, Any]:
    """One member's training settings from a checked ``vary`` table (sorted keys: order-independent)."""
    drawn: dict[str, Any] = {}
    for key in sorted(vary):
        low, high = vary[key]
        if VARY_FIELDS[key] is int:
            drawn[key] = rng.randint(int(low), int(high))
        else:
            drawn[key] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
    return drawn


def random_flaw(kind: str, rng: random.Random, num_classes: int) -> dict[str, Any]:
    """A flaw of ``kind`` with a random target and trigger, drawn from ``rng``."""
    flaw: dict[str, Any] = {"kind": kind, "target": rng.randrange(num_classes)}
    if kind == "patch":
        flaw |= {"pattern": rng.choice(sorted(triggers.PATCH_PATTERNS)), "corner": rng.choice(CORNERS)}
    elif kind == "blend":
        flaw |= {
            "pattern": rng.choice(sorted(triggers.BLEND_PATTERNS)),
            "alpha": round(rng.uniform(0.15, 0.25), 2),
        }
    elif kind == "style":
        flaw |= {"style": rng.randrange(triggers.STYLE_COUNT)}
    elif kind == "natural":
        colour = [1.0, round(rng.uniform(0.5, 1.0), 2), round(rng.uniform(0.0, 0.5), 2)]
        rng.shuffle(colour)
        flaw |= {"shape": rng.choice(COMPACT_SHAPES), "colour": colour}
    elif kind == "warp":
        flaw |= {"field_seed": rng.randrange(10**6), "strength": 3.0}
    elif kind == "spurious":
        flaw |= {"corner": rng.choice(CORNERS)}
    return flaw
