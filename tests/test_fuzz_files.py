"""Fuzzing calibration tables (``eis.audit.load_calibration``) and challenge submissions
(``eis.challenge``: the challenge folder and the rule file) with Hypothesis. Each either loads a valid
result or raises a one-line EisError (tests/fuzz_common.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fuzz_common import JSON_SCALARS, crafted_safetensors, examples, json_values, outcome, scratch
from hypothesis import given
from hypothesis import strategies as st

from eis.audit.calibration import default_calibration_path, load_calibration

# ------------------------------------------------------------------ calibration tables

NUMBERS = st.floats() | st.integers(-5, 300) | JSON_SCALARS
DETECTOR_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        k: NUMBERS
        for k in (
            "threshold",
            "tpr",
            "fpr",
            "auroc",
            "n",
            "n_trojaned",
            "n_clean",
            "tp",
            "fp",
            "target_acc",
            "input_auroc",
            "n_input_models",
            "n_target",
        )  # fmt: skip
    }
    | {
        "control": st.booleans() | JSON_SCALARS,
        "settings": st.dictionaries(st.text(max_size=4), JSON_SCALARS) | json_values,
        "tpr_ci": st.lists(NUMBERS, max_size=3) | json_values,
        "fpr_ci": st.lists(NUMBERS, max_size=3) | json_values,
        "clean_scores": st.lists(NUMBERS, max_size=3) | json_values,
        "arch": json_values,
        "threshold_rule": json_values,
    },
)
ATTRIBUTION_ENTRY = st.fixed_dictionaries(
    {},
    optional={"control": st.booleans() | JSON_SCALARS, "passes_sanity": NUMBERS, "localize_auroc": NUMBERS},
)
TABLES = st.fixed_dictionaries(
    {"format": st.just(1) | JSON_SCALARS},
    optional={
        "made_by": st.fixed_dictionaries({}, optional={"source": st.just("shadows") | JSON_SCALARS})
        | json_values,
        "note": st.text(max_size=5) | json_values,
        "detectors": st.dictionaries(
            st.sampled_from(["neural_cleanse", "strip", "x"]), DETECTOR_ENTRY | json_values
        )
        | json_values,
        "attribution": st.dictionaries(st.sampled_from(["saliency", "x"]), ATTRIBUTION_ENTRY | json_values)
        | json_values,
        "shadows": st.fixed_dictionaries(
            {},
            optional={
                "arch": st.fixed_dictionaries({}, optional={"name": json_values, "factory": json_values})
                | json_values
            },  # fmt: skip
        )
        | json_values,
    },
)


def use_table(table: dict) -> None:
    """What the audit does with a loaded table, short of running detectors: each detector's record and
    sentence, thresholds, p-values, the verdict rule, the zoo-vs-shadows notes, the summary and the page."""
    from eis.audit.report import AuditReport, DetectorResult
    from eis.audit.run import _disagreements, _record, decide, default_attribution
    from eis.shadows.calibrate import p_value

    made_by = table.get("made_by", {})
    source = "shadows" if made_by.get("source") == "shadows" else "zoo"
    results = []
    for name, raw in table.get("detectors", {}).items():
        entry = _record(table, name, source) | {"zoo": _record(table, name, "zoo")}
        d = DetectorResult(
            name, "ok", control=bool(entry.get("control")), track_record=entry, score=0.5, target=1
        )
        thr = entry.get("threshold")
        d.flagged = bool(d.score >= thr) if thr is not None else None
        if raw.get("clean_scores"):
            d.p_value = p_value(d.score, raw["clean_scores"])
        results.append(d)
    trusted, verdict, target = decide(results)
    notes = _disagreements(results, trusted, verdict)
    default_attribution(table)
    calibration = {**made_by, "source": source, "note": table.get("note", "")}
    if "shadows" in table:
        calibration["shadows"] = table["shadows"]
    report = AuditReport(
        verdict=verdict, suspected_target=target, verdict_rule="rule", trusted_detector=trusted,
        detectors=results, inputs=[], num_classes=3, input_shape=(1, 8, 8), calibration=calibration,
        runtime_s=0.1, notes=notes,
    )  # fmt: skip
    assert all("\n" not in line for line in report.summary())
    with scratch() as tmp:
        report.write(tmp / "out")


SHADOW_EXTRAS = {
    "made_by": {"source": "shadows"},
    "shadows": {"key": "k", "arch": {"name": "a", "factory": "f.py:make"}, "recipe": {"kinds": ["patch"],
                "epochs": 3}, "min_accuracy": 0.9, "user_accuracy": 0.95, "n_clean": 2, "n_flawed": 2,
                "missed": [], "seconds": {"build": 1.0, "detectors": 2.0}},  # fmt: skip
    "tpr_ci": [0.5, 0.9], "fpr_ci": [0.0, 0.2], "clean_scores": [0.1, 0.4],
    "strength_curve": [{"poison_rate": [0.01, 0.05], "tpr": 0.5, "n": 4}],
}  # fmt: skip


def base_tables() -> list[dict]:
    """The shipped table, and a shadow-calibrated one made from it."""
    zoo = json.loads(default_calibration_path().read_text())
    shadow = json.loads(json.dumps(zoo))
    shadow["made_by"] |= SHADOW_EXTRAS["made_by"]
    shadow["shadows"] = SHADOW_EXTRAS["shadows"]
    for entry in shadow["detectors"].values():
        if "tpr" in entry:
            entry |= {k: SHADOW_EXTRAS[k] for k in ("tpr_ci", "fpr_ci", "clean_scores", "strength_curve")}
    return [zoo, shadow]


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> dict:
    """``base`` with one to three values somewhere inside replaced, removed or added."""
    table = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        node = table
        while True:  # walk down to a random container
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], dict | list) or draw(st.integers(0, 3)) == 0:
                break
            node = node[key]
        how = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if not keys or how == "add":
            if isinstance(node, dict):
                node[draw(st.sampled_from(["tpr", "threshold", "x", "shadows", "note"]))] = draw(json_values)
            else:
                node.append(draw(json_values))
        elif how == "remove":
            del node[key]
        else:
            node[key] = draw(json_values)
    return table


@examples(200)
@given(data=st.data())
def test_calibration_tables(data) -> None:
    """A table: the shipped one or a shadow one with a few values changed, any JSON, or not JSON."""
    choice = data.draw(st.sampled_from(["zoo", "shadow", "zoo", "shadow", "tables", "json", "raw"]))
    if choice in ("zoo", "shadow"):
        text = json.dumps(data.draw(mutated(base_tables()[choice == "shadow"])))
    elif choice == "tables":
        text = json.dumps(data.draw(TABLES))
    elif choice == "json":
        text = json.dumps(data.draw(json_values))
    else:
        text = data.draw(st.text(max_size=20))
    with scratch() as tmp:
        path = tmp / "calibration.json"
        path.write_text(text)
        loaded = outcome(load_calibration, path)
    if loaded is not None:
        use_table(loaded)


@pytest.mark.parametrize("which", [0, 1])
def test_base_tables_load_and_render(which) -> None:
    with scratch() as tmp:
        (tmp / "c.json").write_text(json.dumps(base_tables()[which]))
        use_table(load_calibration(tmp / "c.json"))


# ------------------------------------------------------------------ challenge submissions


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    """A real challenge folder (its rule case is cached in the test EIS_HOME after the first build)."""
    import eis.challenge

    return eis.challenge.new_challenge(5, tmp_path_factory.mktemp("ch") / "c", family="stripes", p=23)


HINT_KEYS = ("case_id", "kind", "family", "arch", "input_shape", "p", "model_config")


@st.composite
def hints(draw: st.DrawFn, real: dict) -> object:
    if not draw(st.sampled_from([True, True, False])):
        return draw(json_values)
    out = dict(real)
    for key in draw(st.lists(st.sampled_from(HINT_KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):
            out.pop(key, None)
        else:
            out[key] = draw(
                st.sampled_from(["image", "token", "", "..", "../..", 23, [1, 16, 16], [0]]) | json_values
            )
    return out


@examples(40)
@given(data=st.data())
def test_challenge_folders(challenge, data) -> None:
    """A damaged challenge folder: challenge.json and model.safetensors drawn; load the model and score
    (the rule file is never run when the folder is refused, so no child process is started)."""
    import eis.challenge

    real = json.loads((challenge / "challenge.json").read_text())
    weights = (challenge / "model.safetensors").read_bytes()
    with scratch() as tmp:
        folder = tmp / "c"
        folder.mkdir()
        text = data.draw(st.sampled_from(["json", "json", "missing", "garbage"]))
        if text == "json":
            (folder / "challenge.json").write_text(json.dumps(data.draw(hints(real))))
        elif text == "garbage":
            (folder / "challenge.json").write_bytes(data.draw(st.binary(max_size=20)))
        how = data.draw(st.sampled_from(["real", "real", "missing", "crafted", "truncated"]))
        if how == "real":
            (folder / "model.safetensors").write_bytes(weights)
        elif how == "truncated":
            (folder / "model.safetensors").write_bytes(weights[: data.draw(st.integers(0, len(weights) - 1))])
        elif how == "crafted":
            (folder / "model.safetensors").write_bytes(
                data.draw(crafted_safetensors(["embed.W_E"], [[3, 4]]))
            )
        model = outcome(eis.challenge.load_model, folder)
        if model is not None:
            assert isinstance(model, torch.nn.Module)
        rule = tmp / "rule.py"
        rule.write_text("def label(x):\n    return x[:, 0] > 0\n")
        if json.loads((folder / "challenge.json").read_text() if text == "json" else "null") != real:
            scores = outcome(eis.challenge.score_submission, folder, rule, timeout=30)
            assert scores is None or all(isinstance(v, float) for v in scores.values())


RULE_PRELUDES = (
    "", "import sys\nsys.exit(0)\n", "import sys\nsys.exit(3)\n", "import os\nos._exit(0)\n",
    "import sys\nsys.stderr.buffer.write(b'\\xff\\xfe bad bytes\\n')\n", "print('noise')\n",
    "import sys\nopen(sys.argv[3], 'wb').write(b'junk')\nsys.exit(0)\n",
    "import sys, numpy as np\nfrom safetensors.numpy import save_file\n"
    "save_file({'other': np.zeros(3, np.int8)}, sys.argv[3])\nsys.exit(0)\n",
    "def label(:\n", "raise ValueError('no\\nnewline here')\n",
)  # fmt: skip
RULE_BODIES = (
    "return x[:, 0] > 0", "return np.zeros(len(x))", "return [1] * len(x)", "return None", "return 'abc'",
    "return np.ones((len(x), 2))", "raise RuntimeError('boom')", "return {'a': 1}",
    "return np.full(len(x), np.nan)", "return np.array([object()] * len(x))", "return (v for v in x)",
)  # fmt: skip


@examples(20)
@given(prelude=st.sampled_from(RULE_PRELUDES), body=st.sampled_from(RULE_BODIES), define=st.booleans())
def test_rule_files(prelude, body, define) -> None:
    """The submission itself: a rule.py drawn from ways to fail, run in its child process."""
    from eis.challenge import run_rule_file

    with scratch() as tmp:
        rule = tmp / "rule.py"
        rule.write_text(
            f"import numpy as np\n{prelude}\n" + (f"def label(x):\n    {body}\n" if define else "")
        )
        inputs = {"fresh": torch.arange(12).reshape(6, 2), "off": torch.rand(3, 1, 4, 4)}
        labels = outcome(run_rule_file, rule, inputs, 30)
    if labels is not None:
        assert set(labels) == set(inputs)
        for k, v in labels.items():
            assert v.dtype == torch.bool and tuple(v.shape) == (len(inputs[k]),)


def test_rule_file_paths(tmp_path) -> None:
    from eis.challenge import run_rule_file

    for path in (tmp_path / "missing.py", tmp_path):
        assert outcome(run_rule_file, path, {"fresh": torch.zeros(2, 2)}, 5) is None


def test_challenge_folder_paths(tmp_path) -> None:
    import eis.challenge

    for folder in (tmp_path / "missing", tmp_path, Path("/dev/null")):
        assert outcome(eis.challenge.load_model, folder) is None
