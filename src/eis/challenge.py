"""``eis challenge``: the mechanist challenge for a person, scored like the ``challenge`` track.

:func:`new_challenge` builds (or takes from the eis cache) a network trained on a secret rule and writes a
folder a person can take anywhere::

    DIR/model.safetensors   the network's weights
    DIR/inputs.safetensors  "train": the inputs it was trained on (no labels)
    DIR/challenge.json      architecture, rule family and its one-sentence form, network accuracy,
                            input encoding, and how to load and score

The rule itself stays in the eis cache (``EIS_HOME/zoo/<case id>/truth``), never in DIR. A person writes
``rule.py`` defining ``label(x)``: ``x`` is a numpy array (images: float32 (N, 1, 16, 16) in [0, 1];
tokens: int64 (N, 2) pairs (x, y)); it returns N truthy values. :func:`score_submission` runs that file in
a separate Python process with a time limit (default 120 s), on the fresh and off-distribution inputs,
and scores its labels with the track's scores; the description length is the file's size in bytes.
The file is run as ordinary Python code, with the user's rights: it is not a sandbox, so score only
code you would run yourself. Example::

    import eis.challenge
    folder = eis.challenge.new_challenge(seed=3, out="my-challenge")
    model = eis.challenge.load_model(folder)
    print(eis.challenge.score_submission(folder, "rule.py"))
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.build import build_case
from eis.zoo.rules.case import RuleCase
from eis.zoo.rules.grammar import FAMILIES
from eis.zoo.rules.models import new_model
from eis.zoo.rules.spec import RuleSpec

DEFAULT_TIMEOUT = 120.0
FILES = ("model.safetensors", "inputs.safetensors", "challenge.json")
ENCODING = {
    "image": "x: float32 (N, 1, 16, 16) in [0, 1]; the network's logits (N, 2), label = argmax",
    "token": "x: int64 (N, 2) pairs (x, y) in Z_p; the network reads tokens [x, p + y, 2p] and its logits "
    "at the last position (N, 3, 2)[:, -1] give the label = argmax",
}
# runs in the child process: the user's file, its label(x) on the given inputs, labels back as int8
_RUNNER = """
import runpy, sys
import numpy as np
from safetensors.numpy import load_file, save_file
ns = runpy.run_path(sys.argv[1])
if not callable(ns.get("label")):
    sys.exit("rule file defines no function label(x)")
out = {}
for name, x in load_file(sys.argv[2]).items():
    y = np.asarray(ns["label"](x)).reshape(-1)
    if y.shape != (len(x),):
        sys.exit(f"label(x) returned {y.shape[0]} values for {len(x)} inputs")
    out[name] = (y.astype(np.float64) != 0).astype(np.int8)
save_file(out, sys.argv[3])
"""


def challenge_spec(seed: int, family: str | None = None, p: int = 59) -> RuleSpec:
    """The rule case behind ``eis challenge new --seed S``: family ``FAMILIES[seed % 6]`` unless given;
    token rules on Z_``p``."""
    if not isinstance(seed, int) or seed < 0:
        raise EisError(f"seed must be a non-negative integer, got {seed!r}")
    family = family or FAMILIES[seed % len(FAMILIES)]
    if family not in FAMILIES:
        raise EisError(f"unknown rule family {family!r}; valid: {', '.join(FAMILIES)}")
    return RuleSpec(f"challenge-{family}-{seed}", family, seed=seed, p=p).validated()


def new_challenge(seed: int, out: str | Path, family: str | None = None, p: int = 59) -> Path:
    """Build the challenge of ``seed`` (cached) and write DIR (see the module docstring)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EisError(f"--out {str(out)!r} exists and is not empty; choose a new folder")
    case, _ = build_case(challenge_spec(seed, family, p))
    assert isinstance(case, RuleCase)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(artifact.load_weights(case.root)), str(out / "model.safetensors"))
    save_file({"train": case.train_inputs().contiguous()}, str(out / "inputs.safetensors"))
    hints: dict[str, Any] = {
        "case_id": case.id,
        "kind": case.kind,
        "family": case.family,
        "family_sentence": case.meta["family_sentence"],
        "network_accuracy": case.meta["clean_accuracy"],
        "arch": case.meta["arch"],
        "input_encoding": ENCODING[case.kind],
        "load": "eis.challenge.load_model(DIR)",
        "score": "eis challenge score DIR rule.py  (rule.py defines label(x) -> N truthy values)",
    }
    if case.kind == "image":
        hints |= {
            "dataset": case.dataset,
            "input_shape": case.meta["input_shape"],
            "templates": "a template_band rule's template k is inputs.safetensors['train'][k]",
        }
    else:
        hints |= {"p": case.meta["p"], "model_config": case.meta["model_config"]}
    (out / "challenge.json").write_text(json.dumps(hints, indent=2, sort_keys=True))
    return out


def _hints(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "challenge.json"
    try:
        hints = json.loads(path.read_text())
    except (OSError, ValueError):
        hints = None
    if not isinstance(hints, dict):
        raise EisError(f"{str(folder)!r} is not a challenge folder (no readable challenge.json)")
    return hints


def _is_int(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def load_model(folder: str | Path) -> nn.Module:
    """The challenge's network (eval mode, CPU), from DIR alone (safetensors; nothing is unpickled)."""
    hints = _hints(folder)
    kind, where = hints.get("kind"), f"challenge.json in {str(folder)!r}"
    if kind == "image":
        shape = hints.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v, 1, 512) for v in shape)):
            raise EisError(f"{where}: input_shape must be [C, H, W], integers in 1..512; got {shape!r}")
    elif kind == "token":
        if not _is_int(hints.get("p"), 11, 127):
            raise EisError(f"{where}: p must be an integer in 11..127; got {hints.get('p')!r}")
    else:
        raise EisError(f"{where}: kind must be 'image' or 'token'; got {kind!r}")
    try:
        model = new_model(kind, hints)
    except Exception as exc:  # a shape the architecture cannot take
        raise EisError(
            f"{where} describes no network eis builds: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    path = Path(folder) / "model.safetensors"
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise EisError(f"{str(path)!r} is not a readable safetensors file: {_one_line(exc)}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected keys, other shapes
        raise EisError(
            f"{str(path)!r} does not fit the network {where} describes: {_one_line(exc)}"
        ) from None
    return model.eval()


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _case(hints: dict[str, Any]) -> RuleCase:
    case_id = hints.get("case_id", "")
    root = artifact.case_dir(case_id)  # a one-line EisError for an id that is not a plain name
    if not root.is_dir():
        raise EisError(
            f"the sealed rule of challenge {case_id!r} is not in this machine's eis cache; "
            "score where `eis challenge new` made it, or run it here with the same --seed"
        )
    case = RuleCase(root)
    if case.meta.get("kind") != "rule":
        raise EisError(
            f"case {case_id!r} in the eis cache is not a rule case, so not a challenge's sealed rule"
        )
    return case


def run_rule_file(
    rule_file: str | Path, inputs: dict[str, torch.Tensor], timeout: float
) -> dict[str, torch.Tensor]:
    """Run ``rule_file``'s ``label(x)`` on each named input batch in a child Python process, within
    ``timeout`` seconds; returns bool labels per name. Any failure is a one-line EisError."""
    rule_file = Path(rule_file)
    if not rule_file.is_file():
        raise EisError(f"rule file {str(rule_file)!r} does not exist")
    with tempfile.TemporaryDirectory(prefix="eis-challenge-") as tmp:
        src, dst = Path(tmp) / "inputs.safetensors", Path(tmp) / "labels.safetensors"
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(src))
        try:  # errors="replace": the rule's own output may be any bytes
            proc = subprocess.run(
                [sys.executable, "-c", _RUNNER, str(rule_file.resolve()), str(src), str(dst)],
                capture_output=True, text=True, errors="replace", timeout=timeout,
                cwd=rule_file.resolve().parent,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise EisError(f"{rule_file.name!r} ran past the {timeout:g} s time limit (--timeout)") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise EisError(f"{rule_file.name!r} failed: {last}")
        try:
            labels = load_file(str(dst))
        except (SafetensorError, OSError):
            labels = {}
        if set(labels) != set(inputs) or any(labels[k].shape != (len(v),) for k, v in inputs.items()):
            raise EisError(
                f"{rule_file.name!r} exited without its labels (did it call sys.exit or os._exit, or write "
                "to the runner's files?); define label(x) and let the file run to its end"
            )
        return {k: labels[k].bool() for k in inputs}


def score_submission(
    folder: str | Path, rule_file: str | Path, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, float]:
    """The challenge track's scores of ``rule_file`` on the challenge in ``folder``."""
    from eis.tracks.challenge import score_labels

    case = _case(_hints(folder))
    inputs = {"fresh": case.fresh_inputs()}
    if (off := case.off_inputs()) is not None:
        inputs["off"] = off
    labels = run_rule_file(rule_file, inputs, timeout)
    scores = score_labels(case, labels["fresh"], labels.get("off"))
    scores["description_bytes"] = float(Path(rule_file).stat().st_size)
    return scores
