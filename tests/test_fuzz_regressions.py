"""Regression tests for the bugs the Hypothesis fuzz suites (tests/test_fuzz_*.py) found in loading a
user's model and data (eis.usermodel) and in the CLI's JSON options (eis.cli.common): each input here once
raised something other than a one-line EisError (or was accepted though unusable); now it is refused in
one line naming what was wrong and what is valid. Suites, calibration tables and challenge submissions:
tests/test_fuzz_regressions_files.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz_common import refused
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from eis.usermodel import Normalized, load_examples, load_model, save_weights

ROOT = Path(__file__).resolve().parents[1]


def png(path: Path, side: int = 4, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (side, side), 128).save(path, format="PNG")


# ------------------------------------------------------------------ eis.usermodel: image folders


@pytest.mark.parametrize("body", [b"", b"not an image", "truncated"])
def test_folder_file_with_an_image_suffix_that_is_no_image(tmp_path, body) -> None:
    png(tmp_path / "d" / "0" / "a.png")
    if body == "truncated":
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        body = buf.getvalue()[:40]
    (tmp_path / "d" / "0" / "b.png").write_bytes(body)  # was PIL.UnidentifiedImageError / OSError
    refused(load_examples, tmp_path / "d", match=r"'0/b.png' in image folder .* is not a readable image")


@pytest.mark.parametrize("size", [0, -1, 100_000])
def test_size_out_of_range(tmp_path, size) -> None:
    png(tmp_path / "d" / "0" / "a.png")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2, np.int64))
    for path in (tmp_path / "d", tmp_path / "d.npz"):  # was ValueError (PIL, F.interpolate), or gigabytes
        refused(
            load_examples, path, size=size, match=r"size must be a number of pixels per side in 1\.\.4096"
        )


def test_class_folder_named_by_a_digit_int_refuses(tmp_path) -> None:
    png(tmp_path / "d" / "\u00b2" / "a.png")  # "²".isdigit() but int("²") raised ValueError
    png(tmp_path / "d" / "1" / "a.png")
    x, y, _ = load_examples(tmp_path / "d")
    assert sorted(y.tolist()) == [0, 1]  # not class indices: the sorted names are


def test_class_folder_named_by_a_huge_integer(tmp_path) -> None:
    png(tmp_path / "d" / ("9" * 25) / "a.png")  # was a RuntimeError (int64 overflow in torch.tensor)
    refused(load_examples, tmp_path / "d", match="is not a class index")


# ------------------------------------------------------------------ eis.usermodel: array files


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "is not a readable .npz"),  # BadZipFile
        (lambda p: p.write_bytes(b""), "is not a readable .npz"),  # EOFError
        (
            lambda p: np.save(p.open("wb"), np.zeros(3)),
            "holds one bare array",
        ),  # TypeError (no context manager)
        (lambda p: np.savez(p, x=np.array(["a", "b"])), "plain numeric arrays"),  # TypeError from torch
    ],
)
def test_npz_files_numpy_cannot_give_as_named_arrays(tmp_path, make, match) -> None:
    path = tmp_path / "d.npz"
    make(path)
    refused(load_examples, path, labelled=False, match=match)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((1, 0, 4, 4), np.float32), None, "none of them 0"),  # was a RuntimeError from x.min()
        (np.zeros((2, 1, 4, 4), np.complex64), None, "expected real numbers"),  # imaginary part dropped
        (np.zeros((2, 1, 4, 4), np.float32), np.array([-1, 0]), "whole labels in 0..2"),  # negative labels
        (np.zeros((2, 1, 4, 4), np.float32), np.array([np.inf, 0]), "whole labels in 0..2"),  # int64 garbage
        (np.zeros((2, 1, 4, 4), np.float32), np.array([2**40, 0]), "whole labels in 0..2"),
    ],
)
def test_array_files_with_unusable_x_or_y(tmp_path, x, y, match) -> None:
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp_path / "d.npz", **arrays)
    refused(load_examples, tmp_path / "d.npz", labelled=False, match=match)


# ------------------------------------------------------------------ eis.usermodel: models

ARCH = """
import sys
from torch import nn


def make(classes=3):
    return nn.Linear(4, classes)


def exits():
    sys.exit(3)
"""


@pytest.fixture
def arch(tmp_path):
    f = tmp_path / "eis_fuzz_regression_arch.py"
    f.write_text(ARCH)
    save_weights(nn.Linear(4, 3), tmp_path / "w.safetensors")
    return f


def test_relative_module_name_for_arch(arch, tmp_path) -> None:
    # importlib raised TypeError ("the 'package' argument is required") for ".:make"
    refused(load_model, tmp_path / "w.safetensors", ".:make", match="cannot import module '.'")


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        ("make", {"nope": 1}, "factory .* failed on --arch-kwargs .*TypeError"),  # was TypeError
        ("make", {"classes": "x"}, "factory .* failed on --arch-kwargs .*TypeError"),
        ("exits", None, "factory .* failed .*SystemExit"),  # was SystemExit: the CLI quit silently
    ],
)
def test_factory_failing_on_its_arguments(arch, tmp_path, fn, kwargs, match) -> None:
    refused(load_model, tmp_path / "w.safetensors", f"{arch}:{fn}", kwargs, match=match)


def test_arch_file_exiting_on_import(tmp_path) -> None:
    f = tmp_path / "eis_fuzz_regression_exit.py"
    f.write_text("import sys\nsys.exit(0)\n")
    save_weights(nn.Linear(4, 3), tmp_path / "w.safetensors")
    refused(load_model, tmp_path / "w.safetensors", f"{f}:make", match="importing .* failed: SystemExit")


def test_zip_whose_directory_is_damaged(tmp_path) -> None:
    torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "m.ts"))
    body = bytearray((tmp_path / "m.ts").read_bytes())
    body[body.index(b"PK\x01\x02") + 1] = 0  # the end record still reads, the directory does not
    (tmp_path / "m.ts").write_bytes(bytes(body))
    assert zipfile.is_zipfile(tmp_path / "m.ts")
    refused(load_model, tmp_path / "m.ts", match="is a damaged zip archive")  # was zipfile.BadZipFile


def test_pt2_garbage_prints_no_traceback(tmp_path) -> None:
    """torch.export.load logs the deserialisation traceback to stderr (its own handler) before it raises;
    the CLI printed it above the one-line error."""
    torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "m.pt2"))  # a zip, but no torch.export program
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(4, np.int64))
    eis = Path(sys.executable).parent / "eis"
    res = subprocess.run(
        [str(eis), "audit", str(tmp_path / "m.pt2"), "--data", str(tmp_path / "d.npz"), "--out",
         str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "is not a readable torch.export program: PytorchStreamReader" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("mean", "std"), [([float("nan")], [1.0]), ([0.5], [float("inf")]), ([0.5], [float("nan")])]
)
def test_normalisation_that_is_not_finite(mean, std) -> None:
    refused(Normalized, nn.Identity(), mean, std, match=r"one value per channel \(finite, std > 0\)")


def test_file_and_key_names_with_newlines_stay_one_line(arch, tmp_path) -> None:
    path = tmp_path / "a\nb.pt"
    torch.save(nn.Linear(2, 2), path)
    assert "'a\\nb.pt'" in refused(load_model, path)
    save_file({"odd\nkey": torch.zeros(2)}, str(tmp_path / "k.safetensors"))
    assert "'odd\\nkey'" in refused(load_model, tmp_path / "k.safetensors", f"{arch}:make")


# ------------------------------------------------------------------ eis.cli.common


@pytest.mark.parametrize("option", ["--arch-kwargs", "--settings"])
def test_json_option_nested_too_deep(tmp_path, option) -> None:
    from eis.cli import app

    save_weights(nn.Linear(4, 3), tmp_path / "w.safetensors")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(4, np.int64))
    (tmp_path / "a.py").write_text("from torch import nn\n\ndef make(**kw):\n    return nn.Linear(4, 3)\n")
    args = ["repair", str(tmp_path / "w.safetensors"), "--arch", f"{tmp_path / 'a.py'}:make"]
    args += ["--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"), option, "[" * 50_000]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "400"})  # was RecursionError, exit code 1
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.output.count("\n") == 1 and f"error: {option} must be a JSON object; got '[[[[" in res.output
    assert not (tmp_path / "o").exists()
