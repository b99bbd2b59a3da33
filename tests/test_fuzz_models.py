"""Fuzzing ``eis.usermodel.load_model`` and ``load_factory`` with Hypothesis: random, truncated, bit-flipped
and hand-built safetensors, damaged TorchScript and .pt2 archives, pickles with and without
``trust_pickle`` (without it a pickle is never unpickled: a sentinel's ``__reduce__`` must not run), and
factory specs, files and keyword arguments. Each either loads a model or raises a one-line EisError
(tests/fuzz_common.py)."""

from __future__ import annotations

import io
import pickle
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fuzz_common import crafted_safetensors, examples, names, outcome, scratch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from eis.usermodel import load_factory, load_model, save_weights

# ------------------------------------------------------------------ models

ARCH_SRC = textwrap.dedent(
    """
    import sys
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
            self.head = nn.Linear(4, classes)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean((2, 3)))

    def make(classes=3):
        return Tiny(classes)

    def boom(**kwargs):
        raise RuntimeError("boom\\nsecond line")

    def exits(**kwargs):
        sys.exit(3)

    def not_a_module(**kwargs):
        return 3

    CONSTANT = 4
    """
)
ARCH_FILE_SOURCES = (
    "def make(:\n",  # a syntax error
    "raise RuntimeError('import failed\\nsecond line')\n",
    "import sys\nsys.exit(0)\n",
    "import no_such_module_for_eis_fuzz\n",
    "make = 3\n",
    "def make(**kw):\n    return [1, 2]\n",
    "# \u00e9\u00e8 unicode comment\ndef make(**kw):\n    return None\n",
)


class _Sentinel:
    """Unpickling this runs code: it creates the file ``flag``."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (exec, (f"open({str(self.flag)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Real files of every form (weights + factory, TorchScript, .pt2, pickles, a sentinel pickle)."""
    root = tmp_path_factory.mktemp("fuzz-models")
    arch = root / "eis_fuzz_arch.py"
    arch.write_text(ARCH_SRC)
    torch.manual_seed(0)
    model = load_factory(f"{arch}:make")(classes=3).eval()
    save_weights(model, root / "w.safetensors")
    torch.jit.script(model).save(str(root / "m.ts"))
    x = torch.rand(2, 1, 8, 8)
    torch.export.save(torch.export.export(model, (x,)), str(root / "m.pt2"))
    torch.save(model, root / "m.pt")
    flag = root / "unpickled.flag"
    torch.save(_Sentinel(flag), root / "sentinel.pt")
    (root / "sentinel.pkl").write_bytes(pickle.dumps(_Sentinel(flag)))
    torch.save({"a": torch.zeros(2)}, root / "state.pt")
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.suffix != ".py"}
    return Files(root=root, arch=arch, files=files, flag=flag)


class Files(SimpleNamespace):
    def __repr__(self) -> str:  # Hypothesis prints the fixture of a failing case: not all the bytes
        return f"Files({self.root})"


MUTATIONS = ("none", "none", "none", "truncate", "flip", "append", "zip_member", "central_dir", "random")
STATE_SHAPES = {"conv.weight": [4, 1, 3, 3], "conv.bias": [4], "head.weight": [3, 4], "head.bias": [3]}
SUFFIXES = (None, None, ".safetensors", ".pt", ".pt2", ".ts", ".pth", "", ".zip")


def mutate(data: bytes, how: str, draw: st.DrawFn) -> bytes:
    if how == "central_dir" and b"PK\x01\x02" in data:  # the zip's directory, past its end record's check
        out = bytearray(data)
        out[data.index(b"PK\x01\x02") + draw(st.integers(0, 40))] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=32))
    if how == "zip_member" and zipfile.is_zipfile(io.BytesIO(data)):
        src, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
        victim = draw(st.sampled_from(src.namelist()))
        with zipfile.ZipFile(buf, "w") as dst:
            for info in src.infolist():
                body = src.read(info)
                if info.filename == victim:
                    body = draw(st.sampled_from([b"", b"garbage", body[: len(body) // 2], body + b"\x00"]))
                dst.writestr(info, body)
        return buf.getvalue()
    if how == "random":
        return draw(st.binary(max_size=128))
    return data


ARCH_SPECS = (
    "GOOD", "GOOD", "GOOD:boom", "GOOD:exits", "GOOD:not_a_module", "GOOD:CONSTANT", "GOOD:nope",
    "", ":", "make", ":make", "no_such_pkg_eis_fuzz.mod:make", ".:make", "..x:make", "math:pi", "math:sqrt",
    "torch.nn:Identity", "torch.nn:Linear", "eis.errors:EisError", "collections:OrderedDict",
    "/no/such/file.py:make", "relative/missing.py:make",
)  # fmt: skip
KWARGS = (
    st.none()
    | st.just({})
    | st.fixed_dictionaries({"classes": st.integers(-2, 5)})
    | st.dictionaries(
        st.sampled_from(["classes", "x", "", "width"]), st.integers(0, 3) | st.text(max_size=3), max_size=2
    )
)


def safe_text(spec: str) -> str:
    """Random text as a factory spec that never names a real module (one could have side effects)."""
    return "eis_fuzz_absent_" + spec if ":" in spec else spec


@st.composite
def arch_specs(draw: st.DrawFn, arch_file: Path) -> str | None:
    choice = draw(  # one_of favours its first strategies, sampled_from its first entries
        st.sampled_from(ARCH_SPECS) | st.none() | st.sampled_from(ARCH_FILE_SOURCES) | st.text(max_size=20)
    )
    if choice is not None and choice.startswith("GOOD"):  # the real factory file, some function of it
        return f"{arch_file}{choice[4:] or ':make'}"
    if choice is None or choice in ARCH_SPECS:
        return choice
    if choice in ARCH_FILE_SOURCES:  # a user file that fails in its own way
        f = arch_file.parent / f"eis_fuzz_user_{ARCH_FILE_SOURCES.index(choice)}.py"
        f.write_text(choice)
        return f"{f}:make"
    return safe_text(choice)


@examples(200)
@given(data=st.data())
def test_model_files(model_files, data) -> None:
    draw = data.draw
    name = draw(st.sampled_from([*sorted(model_files.files), "crafted.safetensors"]))
    if name == "crafted.safetensors":
        body = draw(crafted_safetensors(list(STATE_SHAPES), list(STATE_SHAPES.values())))
    else:
        body = mutate(model_files.files[name], draw(st.sampled_from(MUTATIONS)), draw)
    suffix = draw(st.sampled_from(SUFFIXES))
    stem = Path(name).stem if draw(st.booleans()) else draw(names)
    spec = draw(arch_specs(model_files.arch))
    kwargs = draw(KWARGS)
    trust = draw(st.booleans())
    flag = model_files.flag
    flag.unlink(missing_ok=True)
    with scratch() as tmp:
        path = tmp / (stem + (Path(name).suffix if suffix is None else suffix))
        path.write_bytes(body)
        model = outcome(load_model, path, spec, kwargs, trust_pickle=trust, device="cpu")
    if not trust:
        assert not flag.exists(), "a pickle was unpickled without trust_pickle"
    if model is not None:
        assert isinstance(model, nn.Module)


@examples(40)
@given(spec=st.text(max_size=30) | st.sampled_from(ARCH_SPECS))
def test_factory_specs(spec) -> None:
    if spec not in ARCH_SPECS:
        spec = safe_text(spec)
    fn = outcome(load_factory, spec)
    assert fn is None or callable(fn)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", "", ".ts", ".pt2", ".safetensors", ".zip"])
@pytest.mark.parametrize("name", ["sentinel.pt", "sentinel.pkl"])
def test_pickles_are_never_unpickled_without_trust(model_files, tmp_path, name, suffix) -> None:
    """Whatever its name, a pickle is refused unread without trust_pickle; with it, it is unpickled (the
    sentinel's code runs, which shows the sentinel works) and refused as not a model."""
    path = tmp_path / f"model{suffix}"
    path.write_bytes(model_files.files[name])
    model_files.flag.unlink(missing_ok=True)
    assert outcome(load_model, path, f"{model_files.arch}:make", device="cpu") is None
    assert not model_files.flag.exists()
    if suffix in (".pt", ".pth", ".bin", ""):
        assert outcome(load_model, path, trust_pickle=True, device="cpu") is None  # it holds None
        assert model_files.flag.exists()
