"""Fuzzing suite TOML files (``eis.zoo.suites.load_suite``) with Hypothesis: drawn documents (tables,
keys, values of every TOML type, plausible values with a few corrupted), raw text and bytes, and flaw
tables drawn from each flaw kind's own fields. Each either loads usable specs or raises a one-line
EisError (tests/fuzz_common.py)."""

from __future__ import annotations

import datetime as dt
import json
import math

from fuzz_common import OFTEN, examples, outcome, scratch
from hypothesis import given
from hypothesis import strategies as st

from eis.zoo.suites import load_suite

# ------------------------------------------------------------------ suite files

TOML_SCALARS = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1))
)
toml_values = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


FLAW_KINDS = ("patch", "clean", "blend", "natural", "warp", "spurious", "style", "label_permutation", "nope")
FLAWS = st.fixed_dictionaries(
    {"kind": st.sampled_from(FLAW_KINDS)},
    optional={
        "target": st.integers(0, 9) | st.sampled_from([-1, 10, 2**62, 1.5, "3"]),
        "pattern": st.sampled_from(["checkerboard", "noise", "smiley", "x"]),
        "alpha": st.floats(0, 1) | st.sampled_from([-1.0, 2.0, math.nan]),
        "corner": st.sampled_from(["top_right", "bottom_left", "middle", 3]),
        "shape": st.sampled_from(["star", "blob"]),
        "colour": st.lists(st.floats(0, 1), min_size=3, max_size=3)
        | st.lists(st.integers(-1, 2), max_size=4),
        "style": st.integers(0, 3) | st.sampled_from([-1, 99, "a"]),
        "field_seed": st.integers(-1, 10**6),
        "strength": st.floats(-1, 10),
    },
)
TRAIN = st.dictionaries(
    st.sampled_from(["epochs", "lr", "batch_size", "optimizer", "augment", "weight_decay", "schedule", "x"]),
    st.integers(1, 3) | st.floats(1e-4, 1) | st.sampled_from(["adam", "sgd", "cosine", ["flip"], 0, -1.0]),
    max_size=3,
)
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
FIELDS = {  # plausible values (valid ones first); entries() replaces a few with anything TOML holds
    "name": NAMES | st.sampled_from(["", "a b", "-x", "x" * 101]),
    "dataset": st.sampled_from(["digits", "nope"]),
    "arch": st.sampled_from(["cnn", "resnet", "mixer", "nope", ["cnn", "resnet"], ["cnn", "cnn"], []]),
    "flaw": FLAWS,
    "seed": st.integers(0, 2**40) | st.just(-3),
    "train": TRAIN,
    "bars": st.dictionaries(st.sampled_from(["clean_accuracy", "asr", "x"]), st.floats(0, 1) | st.just(2.0)),
    "role": st.sampled_from(["eval", "train", "x"]),
    "clean": st.integers(0, 4) | st.sampled_from([-1, 10**12]),
    "flawed": st.integers(0, 4) | st.sampled_from([-1, 10**12]),
    "flaws": st.lists(st.sampled_from(FLAW_KINDS), max_size=3),
    "vary": st.dictionaries(
        st.sampled_from(["lr", "epochs", "batch_size", "x"]),
        st.lists(
            st.integers(1, 40) | st.floats(1e-4, 1) | st.sampled_from([math.inf, math.nan, -1]), max_size=3
        ),
        max_size=2,
    ),
    "evasive": st.booleans(),
    "train_population": NAMES,
    "program": st.sampled_from(["reverse", "hist", "sort_unique", "detect_pattern", "nope"]),
    "ablation": st.sampled_from(["zero", "mean", "resample", "x"]),
    "rotate": st.booleans(),
    "distractors": st.booleans(),
    "n_inputs": st.integers(8, 4096) | st.just(0),
    "family": st.sampled_from(["template_band", "region_mass", "linear_mod", "stripes", "bands", "x"]),
    "p": st.integers(11, 127) | st.just(500),
    "epochs": st.integers(1, 200) | st.just(-1),
    "steps": st.integers(1, 20000) | st.just(0),
    "bar": st.floats(0, 1) | st.just(2.0),
}
TABLE_FIELDS = {
    "case": ["name", "dataset", "arch", "flaw", "seed", "train", "bars"],
    "population": [
        "name",
        "dataset",
        "arch",
        "role",
        "clean",
        "flawed",
        "flaws",
        "seed",
        "train",
        "vary",
        "bars",
        "evasive",
        "train_population",
    ],  # fmt: skip
    "circuit": ["name", "program", "ablation", "rotate", "distractors", "seed", "n_inputs"],
    "rule": ["name", "family", "seed", "dataset", "p", "epochs", "steps", "bar"],
    "defaults": ["dataset", "arch", "seed", "train", "bars"],
}
REQUIRED = {"case": 3, "population": 3, "circuit": 2, "rule": 2, "defaults": 0}


@st.composite
def entries(draw: st.DrawFn, table: str) -> dict:
    """One table entry: mostly its required fields, some optional ones, now and then one field that is
    unknown or of any TOML type."""
    fields = TABLE_FIELDS[table]
    keys = draw(st.lists(st.sampled_from(fields), max_size=5, unique=True))
    if draw(OFTEN):
        keys = [k for k in fields[: REQUIRED[table]] if k not in keys] + keys
    entry = {k: draw(FIELDS[k]) for k in keys}
    if not draw(OFTEN):
        entry[draw(st.sampled_from([*fields, "nope"]))] = draw(toml_values)
    tables = [k for k, v in entry.items() if isinstance(v, dict)]
    if tables and not draw(OFTEN):  # a value inside a table (flaw, train, bars, vary) of any type
        inner = entry[draw(st.sampled_from(tables))]
        inner[draw(st.sampled_from([*sorted(inner), "kind", "strength", "nope"]))] = draw(toml_values)
    return entry


@st.composite
def suite_docs(draw: st.DrawFn) -> dict:
    doc: dict = {}
    tops = ["case", "defaults", "population", "circuit", "rule", "description"]
    keys = draw(st.lists(st.sampled_from(tops), max_size=4, unique=True))
    for key in keys + ([] if draw(OFTEN) else [draw(st.sampled_from(["nope", "Case"]))]):
        if key in ("case", "population", "circuit", "rule"):
            doc[key] = draw(st.lists(entries(key), max_size=3) if draw(OFTEN) else toml_values)
        elif key == "defaults":
            doc[key] = draw(entries("defaults") if draw(OFTEN) else toml_values)
        else:
            doc[key] = draw(toml_values)
    return doc


def toml_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)  # JSON escapes are TOML escapes, but for DEL (0x7f)
    return out.replace("\x7f", "\\u007f")


def toml(value: object) -> str:
    """``value`` as a TOML value (inline tables and arrays; ``[[case]]`` entries as an inline array)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml(v)}" for k, v in value.items()) + "}"


SUITE_TEXT = st.sampled_from(["", "[[case]]\n", "case = 3\n", "[defaults]\ndataset = 'digits'\n[[case]]\n"])


@examples(200)
@given(
    doc=suite_docs(),
    raw=st.none() | st.none() | st.none() | SUITE_TEXT | st.text(max_size=40) | st.binary(max_size=40),
)
def test_suite_files(doc, raw) -> None:
    with scratch() as tmp:
        path = tmp / "suite.toml"
        if raw is None:
            path.write_text("\n".join(f"{toml_string(k)} = {toml(v)}" for k, v in doc.items()))
        else:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        specs = outcome(load_suite, str(path))
    if specs is not None:
        check_specs(specs)


def check_specs(specs: list) -> None:
    """Loaded specs are usable: names, ids, and for image cases the training settings and bars."""
    assert isinstance(specs, list)
    for spec in specs:
        assert isinstance(spec.name, str) and len(spec.case_id) == 16
        if hasattr(spec, "training"):
            train = spec.training()
            assert isinstance(train["epochs"], int) and train["epochs"] >= 1
            assert isinstance(train["batch_size"], int) and train["batch_size"] >= 1
            assert isinstance(train["lr"], int | float) and 0 < train["lr"] < math.inf
            for bar in ("clean_accuracy", "asr", "cue_rate", "train_accuracy"):
                assert 0 <= spec.bar(bar) <= 1


def flaw_fields() -> dict[str, list[str]]:
    import dataclasses

    from eis.zoo.flaws import FLAWS

    return {k: [f.name for f in dataclasses.fields(FLAWS.get(k))] for k in FLAWS.names()}


FIELD_VALUES = (
    st.integers(-1, 12) | st.floats(-1, 2) | st.sampled_from(["top_left", "noise", "star", [1.0, 0.5, 0.0]])
)


@examples(150)
@given(data=st.data())
def test_suite_flaw_fields(data) -> None:
    """A case or population whose flaw (or drawn flaw kinds) holds drawn values in its own fields."""
    fields = flaw_fields()
    kind = data.draw(st.sampled_from(sorted(fields)) | st.sampled_from([["patch"], 3, ""]))
    flaw = {"kind": kind}
    own = fields.get(kind, ["target"]) if isinstance(kind, str) else ["target"]
    for key in data.draw(st.lists(st.sampled_from(own), max_size=3, unique=True)):
        flaw[key] = data.draw(FIELD_VALUES if data.draw(OFTEN) else toml_values)
    if data.draw(st.booleans()):
        entry = f'[[case]]\nname = "c"\nflaw = {toml(flaw)}\n'
    else:
        entry = (
            f'[[population]]\nname = "p"\nclean = {data.draw(st.integers(0, 2))}\nflawed = 2\n'
            f"flaws = {toml(data.draw(st.lists(st.sampled_from(sorted(fields)) | toml_values, max_size=2)))}"
            "\n"
            f"vary = {toml(data.draw(FIELDS['vary']))}\ntrain = {toml(data.draw(FIELDS['train']))}\n"
        )
    with scratch() as tmp:
        path = tmp / "suite.toml"
        path.write_text(f'[defaults]\ndataset = "digits"\narch = "cnn"\n\n{entry}')
        specs = outcome(load_suite, str(path))
    if specs is not None:
        check_specs(specs)
