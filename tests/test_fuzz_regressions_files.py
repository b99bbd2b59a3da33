"""Regression tests for the bugs the Hypothesis fuzz suites found in suite files (eis.zoo.suites),
calibration tables (eis.audit.calibration) and challenge submissions (eis.challenge): each input here once
raised something other than a one-line EisError (or was accepted though unusable); now it is refused in
one line naming what was wrong and what is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fuzz_common import refused

# ------------------------------------------------------------------ eis.zoo.suites


POP = '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\n'
CASE = '[[case]]\nname = "c"\ndataset = "digits"\narch = "cnn"\n'
SUITES = {
    "not UTF-8": (b"\xff\xfe[[case]]", "is not UTF-8 text"),  # UnicodeDecodeError
    "defaults not a table": ("defaults = 3\n", "defaults must be a table"),  # TypeError
    "case not a table": ("case = [1]\n", "'case' must be an array of tables"),  # TypeError
    "clean not an integer": (
        POP + "clean = \"x\"\nflawed = 1\n",
        r"clean and flawed must be integers in \[0, 10000\]",
    ),  # ValueError from int("x"); 1.7 became 1; 10**12 members hung
    "clean huge": (
        POP + "clean = 1000000000000\n",
        r"clean and flawed must be integers in \[0, 10000\]",
    ),
    "flaws empty": (
        POP + "clean = 1\nflawed = 1\nflaws = []\n",
        "flaws must be a non-empty list",
    ),  # ZeroDivisionError
    "flaws holds a list": (
        POP + "flawed = 1\nflaws = [[\"patch\"]]\n",
        r"flaw \['patch'\] is not valid",
    ),  # TypeError: unhashable
    "population seed not an integer": (
        POP + "clean = 1\nseed = \"x\"\n",
        "field 'seed' must be an integer",
    ),  # ValueError from int("x")
    "train not a table": (
        CASE + "train = 3\n",
        "field 'train' must be a table",
    ),  # TypeError
    "train.epochs a string": (
        CASE + "train = {epochs = \"x\"}\n",
        "train.epochs must be an integer >= 1",
    ),  # accepted, then failed in training
    "bars holds a string": (
        CASE + "bars = {asr = \"x\"}\n",
        r"field 'bars' must be a table of numbers in \[0, 1\]",
    ),  # accepted, then float("x") failed at the bar check
    "dataset a list": (
        '[[case]]\nname = "c"\ndataset = ["digits"]\narch = "cnn"\n',
        "field 'dataset' must be a name",
    ),  # TypeError: unhashable, in the registry
    "vary epochs below 1": (
        POP + "clean = 2\nvary = {epochs = [0.5, 1]}\n",
        r"vary.epochs must be \[low, high\].*integers",
    ),  # members drew 0 epochs
    "vary epochs infinite": (
        POP + "clean = 2\nvary = {epochs = [1, inf]}\n",
        r"vary.epochs must be \[low, high\]",
    ),  # OverflowError in randint
    "flaw kind a list": (
        CASE + "flaw = {kind = [\"patch\"]}\n",
        r"flaw kind \['patch'\] is not valid",
    ),  # TypeError: unhashable
    "flaw strength a string": (
        CASE + "flaw = {kind = \"warp\", strength = \"x\"}\n",
        "flaw field 'strength' must be a number",
    ),  # TypeError in Warp.check
    "flaw colour a number": (
        CASE + "flaw = {kind = \"natural\", colour = 3}\n",
        "flaw field 'colour' must be a list of numbers",
    ),  # TypeError in make_flaw
    "flaw sources strings": (
        CASE + "flaw = {kind = \"patch\", sources = [\"t\"]}\n",
        "flaw field 'sources' must be a list of integers",
    ),  # ValueError from int("t")
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_files(tmp_path, name) -> None:
    from eis.zoo.suites import load_suite

    text, match = SUITES[name]
    path = tmp_path / "s.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(load_suite, str(path), match=match)


def test_suite_file_that_cannot_be_read(tmp_path, monkeypatch) -> None:
    from eis.zoo.suites import load_suite

    path = tmp_path / "s.toml"
    path.write_text("")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # was PermissionError (root reads a chmod 000 file)
    refused(load_suite, str(path), match="cannot read suite .*: Permission denied")


# ------------------------------------------------------------------ eis.audit.calibration


def shipped() -> dict:
    from eis.audit.calibration import default_calibration_path

    return json.loads(default_calibration_path().read_text())


def _shadows(t):
    t["shadows"] = {"arch": [1]}  # reuse_shadow_table: AttributeError


def _curve(t):  # page rendering failed after audit.json was written
    t["detectors"]["neural_cleanse"]["strength_curve"] = [{"poison_rate": 0.1}]


CALIBRATIONS = {  # what each did before: an AttributeError, ValueError or KeyError in the audit or its page
    "made_by a list": (lambda t: t.update(made_by=[]), "made_by must be an object"),
    "tpr a string": (lambda t: t["detectors"]["neural_cleanse"].update(tpr="x"), "tpr must be a finite"),
    "detector entry a number": (lambda t: t["detectors"].update(strip=3), "detectors.'strip' must be an"),
    "attribution a list": (lambda t: t.update(attribution=[]), "attribution must be an object"),
    "tpr without fpr": (lambda t: t["detectors"]["neural_cleanse"].pop("fpr"), "has tpr but no fpr"),
    "suites a string": (lambda t: t["made_by"].update(suites=5), "made_by.suites must be a list of strings"),
    "shadows.arch a list": (_shadows, "shadows.arch must be an object"),
    "strength curve": (_curve, "strength_curve must be a list of"),
    "made_by.shadows a list": (lambda t: t["made_by"].update(shadows=[None]), "made_by.shadows must be an"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_calibration_tables_the_audit_could_not_use(tmp_path, name) -> None:
    from eis.audit.calibration import load_calibration

    change, match = CALIBRATIONS[name]
    table = shipped()
    change(table)
    (tmp_path / "c.json").write_text(json.dumps(table))
    refused(load_calibration, tmp_path / "c.json", match=match)


# ------------------------------------------------------------------ eis.challenge


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    import eis.challenge

    return eis.challenge.new_challenge(5, tmp_path_factory.mktemp("ch") / "c", family="stripes", p=23)


def copy(challenge: Path, to: Path, hints: object = None, weights: bytes | None = None) -> Path:
    to.mkdir()
    real = json.loads((challenge / "challenge.json").read_text())
    (to / "challenge.json").write_text(json.dumps(real if hints is None else hints(real)))
    w = (challenge / "model.safetensors").read_bytes() if weights is None else weights
    if w != b"-":
        (to / "model.safetensors").write_bytes(w)
    return to


@pytest.mark.parametrize(
    ("hints", "weights", "match"),
    [
        (lambda h: [h], None, "is not a challenge folder"),  # AttributeError: list has no .get
        (
            lambda h: {k: v for k, v in h.items() if k != "kind"},
            None,
            "kind must be 'image' or 'token'",
        ),  # KeyError
        (
            lambda h: h | {"kind": "image", "input_shape": None},
            None,
            r"input_shape must be \[C, H, W\]",
        ),  # TypeError
        (lambda h: h | {"p": 10**9}, None, r"p must be an integer in 11\.\.127"),  # a 2e9-token embedding
        (None, b"-", "is not a readable safetensors file"),  # FileNotFoundError
        (None, b"garbage", "is not a readable safetensors file"),  # SafetensorError
        (lambda h: h | {"p": 29}, None, "does not fit the network"),  # RuntimeError from load_state_dict
    ],
)
def test_challenge_folders_load_model_refuses(challenge, tmp_path, hints, weights, match) -> None:
    import eis.challenge

    folder = copy(challenge, tmp_path / "c", hints, weights)
    refused(eis.challenge.load_model, folder, match=match)


def test_challenge_whose_case_id_is_not_a_rule_case(challenge, tmp_path, smoke_cases) -> None:
    import eis.challenge

    image_case = next(c for c in smoke_cases if c.meta.get("kind", "image") == "image")
    folder = copy(challenge, tmp_path / "c", lambda h: h | {"case_id": image_case.id})
    (tmp_path / "rule.py").write_text("def label(x):\n    return x[:, 0] > 0\n")
    # was KeyError 'rule_kind' once the scorer asked the case for its inputs
    refused(eis.challenge.score_submission, folder, tmp_path / "rule.py", match="is not a rule case")
    folder = copy(challenge, tmp_path / "d", lambda h: [h])
    refused(eis.challenge.score_submission, folder, tmp_path / "rule.py", match="is not a challenge folder")


@pytest.mark.parametrize(
    ("prelude", "match"),
    [
        ("import sys\nsys.exit(0)\n", "exited without its labels"),  # FileNotFoundError
        ("import os\nos._exit(0)\n", "exited without its labels"),
        ("import sys\nopen(sys.argv[3], 'wb').write(b'junk')\nsys.exit(0)\n", "exited without its labels"),
        (
            "import sys, numpy as np\nfrom safetensors.numpy import save_file\n"
            "save_file({'other': np.zeros(2, np.int8)}, sys.argv[3])\nsys.exit(0)\n",
            "exited without its labels",
        ),  # KeyError 'fresh' in score_submission
        (
            "import sys\nsys.stderr.buffer.write(b'\\xff\\xfe')\nsys.exit(1)\n",
            "failed: \ufffd\ufffd",
        ),  # UnicodeDecodeError
    ],
)
def test_rule_files(tmp_path, prelude, match) -> None:
    from eis.challenge import run_rule_file

    rule = tmp_path / "rule.py"
    rule.write_text(prelude + "def label(x):\n    return x[:, 0] > 0\n")
    refused(run_rule_file, rule, {"fresh": torch.zeros(2, 2)}, 30, match=match)
