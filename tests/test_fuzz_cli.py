"""Fuzzing the command line with Hypothesis: ``eis audit`` and ``eis repair`` with drawn model files, data
files and option values (--arch, --arch-kwargs, --mean/--std, --size, --detectors, --calibration,
--inputs, --method, --settings, --validation), and ``eis zoo build <suite.toml>`` with drawn suites.

Bad input exits with code 2 and one ``error:`` line (or click's usage panel for an option it parses
itself, such as ``--size 0``), no traceback, and no --out folder with anything in it. Valid input reaches
the real work, which a stub stops there (fuzz_common.Reached): the detectors, the repair, the zoo build.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fuzz_common import OFTEN, Reached, check_cli, crafted_safetensors, examples, json_values, scratch
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_files import base_tables, mutated
from test_fuzz_loaders import array_files, write_array_file
from test_fuzz_suites import suite_docs, toml, toml_string
from typer.testing import CliRunner

from eis.cli import app

SIDE = 8
ARCH = """
import torch
from torch import nn


def make(bias=-32.0):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1] = 1.0
        net[1].bias.copy_(torch.tensor([0.0, float(bias)]))
    return net
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model that passes the audit's checks (brightness above the middle is class 1), its factory and
    clean data; the other files are drawn per example."""
    from eis.usermodel import load_factory, save_weights

    root = tmp_path_factory.mktemp("fuzz-cli")
    (root / "eis_fuzz_cli_arch.py").write_text(ARCH)
    save_weights(load_factory(f"{root / 'eis_fuzz_cli_arch.py'}:make")(), root / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (torch.rand(64, 1, SIDE, SIDE, generator=g) * 0.4 + 0.1 + 0.4 * y[:, None, None, None]).clamp(0, 1)
    np.savez(root / "clean.npz", x=x.numpy(), y=y.numpy())
    return Root(root)


class Root(SimpleNamespace):
    def __init__(self, root: Path) -> None:
        super().__init__(root=root, arch=f"{root / 'eis_fuzz_cli_arch.py'}:make")

    def __repr__(self) -> str:
        return f"Root({self.root})"


def stubs(mp: pytest.MonkeyPatch) -> None:
    """Stop each command where its real work would start, after every check of its input ran."""
    import eis.audit.run
    import eis.repair
    import eis.zoo

    make_tool, method = eis.audit.run.make_tool, eis.repair._method

    def first_detector(name, **settings):
        make_tool(name, **settings)  # the name and settings are checked as in a real audit
        raise Reached

    def repair_method(name, settings, seed):
        method(name, settings, seed)
        raise Reached

    def build_suite(*args, **kwargs):
        raise Reached

    mp.setattr(eis.audit.run, "make_tool", first_detector)
    mp.setattr(eis.repair, "_method", repair_method)
    mp.setattr(eis.repair, "neural_cleanse", lambda *a, **k: (_ for _ in ()).throw(Reached()))
    mp.setattr(eis.zoo, "build_suite", build_suite)


def invoke(args: list[str]) -> object:
    with pytest.MonkeyPatch.context() as mp:
        stubs(mp)
        return CliRunner().invoke(app, args, env={"COLUMNS": "400"})


NUMBERS = st.sampled_from(["0.5", "nan", "inf", "-1", "0", "", "0.5,0.5", "a", "1e999", "0.5,,0.5", "-0"])
ARCH_KWARGS = (
    st.sampled_from(["{}", '{"bias": -32}', '{"bias": "x"}', '{"nope": 1}', "[1]", "{", "null", "1e999"])
    | st.just("[" * 50_000)
    | json_values.map(json.dumps)
    | st.text(max_size=12)
)


@st.composite
def model_args(draw: st.DrawFn, files: Root, tmp: Path) -> list[str]:
    good = str(files.root / "model.safetensors")
    bad = st.sampled_from(["garbage", "truncated", "crafted", "missing", "folder", "pickle"])
    choice = "good" if draw(OFTEN) else draw(bad)
    if choice == "good":
        path = good
    elif choice == "missing":
        path = str(tmp / "missing.safetensors")
    elif choice == "folder":
        path = str(tmp)
    else:
        path = str(tmp / f"m{draw(st.sampled_from(['.safetensors', '.pt', '.pt2', '']))}")
        body = Path(good).read_bytes()
        if choice == "garbage":
            body = draw(st.binary(max_size=64))
        elif choice == "truncated":
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif choice == "crafted":
            body = draw(crafted_safetensors(["1.weight", "1.bias"], [[2, 64], [2]]))
        else:
            body = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."  # pickle.dumps(1)
        Path(path).write_bytes(body)
    args = [path]
    if draw(OFTEN):
        args += [
            "--arch",
            files.arch if draw(OFTEN) else draw(st.sampled_from([":", "nope:make", "x.py:make"])),
        ]
    if not draw(OFTEN):
        args += ["--arch-kwargs", draw(ARCH_KWARGS)]
    if not draw(OFTEN):
        args += ["--trust-pickle"]
    if not draw(OFTEN):
        args += ["--mean", draw(NUMBERS)]
    if not draw(OFTEN):
        args += ["--std", draw(NUMBERS)]
    if not draw(OFTEN):
        args += ["--size", draw(st.sampled_from(["8", "4", "0", "-1", "x", "100000", "1"]))]
    return args


def data_file(draw: st.DrawFn, files: Root, tmp: Path, name: str) -> str:
    if draw(OFTEN):
        return str(files.root / "clean.npz")
    folder = tmp / name
    folder.mkdir()
    return str(write_array_file(folder, *draw(array_files())))


@examples(60)
@given(data=st.data())
def test_audit_cli(files, data) -> None:
    draw = data.draw
    with scratch() as tmp:
        out = tmp / "out"
        args = [
            "audit",
            *draw(model_args(files, tmp)),
            "--data",
            data_file(draw, files, tmp, "d"),
            "--out",
            str(out),
        ]
        if not draw(OFTEN):
            args += ["--inputs", data_file(draw, files, tmp, "i")]
        if not draw(OFTEN):
            args += [
                "--detectors",
                draw(st.sampled_from(["strip", "neural_cleanse,strip", "nope", ",,", ""])),
            ]
        if not draw(OFTEN):
            cal = tmp / "cal.json"
            cal.write_text(json.dumps(draw(mutated(base_tables()[draw(st.integers(0, 1))]))))
            args += ["--calibration", str(cal)]
        if not draw(OFTEN):
            args += ["--nc-steps", draw(st.sampled_from(["5", "0", "x"]))]
        check_cli(invoke(args), out)


@examples(60)
@given(data=st.data())
def test_repair_cli(files, data) -> None:
    draw = data.draw
    with scratch() as tmp:
        out = tmp / "out"
        args = [
            "repair",
            *draw(model_args(files, tmp)),
            "--data",
            data_file(draw, files, tmp, "d"),
            "--out",
            str(out),
        ]
        if not draw(OFTEN):
            args += ["--method", draw(st.sampled_from(["auto", "fine_tune", "nope", ""]))]
        if not draw(OFTEN):
            args += [
                "--settings",
                draw(st.sampled_from(['{"epochs": 1}', '{"nope": 1}', "[1]", "{"]) | ARCH_KWARGS),
            ]
        if not draw(OFTEN):
            args += ["--validation", draw(st.sampled_from(["0.2", "0", "1.5", "nan", "x", "-0.1", "0.999"]))]
        check_cli(invoke(args), out)


@examples(60)
@given(doc=suite_docs(), raw=st.none() | st.none() | st.binary(max_size=30))
def test_zoo_build_cli(doc, raw) -> None:
    with scratch() as tmp:
        path = tmp / "suite.toml"
        if raw is None:
            path.write_text("\n".join(f"{toml_string(k)} = {toml(v)}" for k, v in doc.items()))
        else:
            path.write_bytes(raw)
        res = invoke(["zoo", "build", str(path), "--workers", "0"])
        check_cli(res, tmp / "no-out")
