"""Fuzzing ``eis.usermodel.load_examples`` with Hypothesis: image folders (sizes, modes L/RGB/RGBA/P/I;16
and more, odd names with unicode, spaces, leading dots and control characters, symlinks, chmod 000 files,
empty, truncated and non-image files with image suffixes, class folders named by digits or not) and
.npz / .safetensors arrays (shapes, dtypes, NaN/inf, empty, labels float, negative or huge, damaged and
hand-built files). Each either loads float32 (N, C, H, W) images in [0, 1] with int64 labels or raises a
one-line EisError (tests/fuzz_common.py). The model loaders are fuzzed in tests/test_fuzz_models.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fuzz_common import OFTEN, check_examples, crafted_safetensors, examples, names, outcome, scratch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from eis.usermodel import IMAGE_SUFFIXES, load_examples

# ------------------------------------------------------------------ image folders

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "I;16", "I;16B", "F", "CMYK", "YCbCr", "HSV", "LAB")
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
OTHER_SUFFIXES = ("", ".txt", ".npz", ".PNG.bak", ".py")


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """An encoded image of a drawn mode, size and format (the format need not match the file's suffix)."""
    mode = draw(st.sampled_from(MODES))
    w, h = (draw(st.sampled_from([5, 5, 5, 5, 1, 2, 9])) for _ in range(2))  # mostly one size
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode in ("I", "F"):
        dtype = np.int32 if mode == "I" else np.float32
        raw = rng.normal(0, 1e4, (h, w)).astype(dtype)
        if mode == "F" and draw(st.booleans()):
            raw.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        im = Image.frombytes(mode, (w, h), raw.tobytes())
    elif mode.startswith("I;16"):
        im = Image.frombytes(mode, (w, h), rng.integers(0, 2**16, (h, w), dtype=np.uint16).tobytes())
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    for fmt in (draw(st.sampled_from(FORMATS)), "TIFF", "WEBP"):
        buf = io.BytesIO()
        try:
            im.save(buf, format=fmt)
            return buf.getvalue()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise AssertionError(f"no format saves mode {mode}")


FILE_KINDS = ("image",) * 6 + ("empty", "garbage", "truncated", "text", "folder", "symlink", "dangling",
                              "unreadable")  # fmt: skip


@st.composite
def file_entries(draw: st.DrawFn) -> list[tuple[str, str, bytes]]:
    """(name, kind, content) of the files of one folder, names unique."""
    entries, clean = [], draw(st.booleans())  # a clean folder holds only images
    for base in draw(st.lists(names, min_size=1, max_size=4, unique=True)):
        suffix = draw(st.sampled_from(IMAGE_SUFFIXES * 3 + OTHER_SUFFIXES))
        if draw(st.booleans()):
            suffix = suffix.upper()
        kind = "image" if clean else draw(st.sampled_from(FILE_KINDS))
        data = b""
        if kind in ("image", "truncated", "unreadable"):
            data = draw(image_bytes())
            if kind == "truncated":
                data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif kind == "garbage":
            data = draw(st.binary(min_size=1, max_size=64))
        elif kind == "text":
            data = draw(st.text(max_size=30)).encode()
        entries.append((base + suffix, kind, data))
    return entries


def write_entries(folder: Path, entries: list[tuple[str, str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for name, kind, data in entries:
        path = folder / name
        if path.exists() or path.is_symlink():
            continue
        if kind == "folder":
            path.mkdir()
        elif kind == "symlink" and made:
            path.symlink_to(made[-1])
        elif kind in ("symlink", "dangling"):
            path.symlink_to(folder / "no-such-file.png")
        else:
            path.write_bytes(data)
            if kind == "unreadable":
                path.chmod(0)
            made.append(path)


CLASS_NAMES = (
    st.sampled_from(["0", "1", "2", "10", "007", "\u00b2", "\u0663", "99999999999999999999999", ".hidden"])
    | names
)


SIZES = st.sampled_from([None, None, 4, 1, 7, 0, -1])


@st.composite
def image_folders(draw: st.DrawFn) -> dict[str, list[tuple[str, str, bytes]]]:
    """{class folder name or "" for the root: its files}."""
    layout = {"": draw(file_entries())}
    for cls in draw(st.lists(CLASS_NAMES, max_size=3, unique=True)):
        layout[cls] = draw(file_entries())
    return layout


@examples(100)
@given(layout=image_folders(), size=SIZES, labelled=st.booleans())
def test_image_folders(layout, size, labelled) -> None:
    with scratch() as tmp:
        root = tmp / "data"
        root.mkdir()
        for cls, entries in layout.items():
            write_entries(root / cls if cls else root, entries)
        result = outcome(load_examples, root, size=size, labelled=labelled)
        if result is not None:
            check_examples(result, labelled=labelled, size=size)


# ------------------------------------------------------------------ array files

DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "bool", "complex64", "object")  # fmt: skip
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, 1.0, 0.5, -0.0, 1e300, -1.0, 255.0, 256.0]


@st.composite
def arrays(draw: st.DrawFn, ndims: list[int], n: int, good: bool) -> np.ndarray:
    """A random array; ``good``: shaped like images (N, C, H, W) or labels (N,) with ``n`` = N."""
    if good:
        dtype = draw(st.sampled_from(["float32", "uint8", "float32", "float64", "float16", "bool", "int64"]))
        shape = (n, *(draw(st.integers(1, 4)) for _ in range(ndims[0] - 1)))
    else:
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.integers(0, 4)) for _ in range(draw(st.sampled_from(ndims))))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = draw(st.sampled_from(["unit", "byte", "labels", "wide", "special"]))
    if good and ndims[0] == 4:
        values = "byte" if dtype == "uint8" else draw(st.sampled_from(["unit", "unit", "unit", values]))
    elif good:
        values = draw(st.sampled_from(["labels", "labels", values]))
    if values == "unit":
        base = rng.random(shape)
    elif values == "byte":
        base = rng.integers(0, 256, shape).astype(float)
    elif values == "labels":
        base = rng.integers(-2, 12, shape).astype(float) + draw(st.sampled_from([0.0, 0.0, 0.5]))
        base = np.abs(base) if draw(st.sampled_from([True, True, False])) else base
    elif values == "wide":
        base = rng.normal(0, 1e3, shape)
    else:
        base = rng.choice(SPECIAL, shape)
    with np.errstate(all="ignore"):
        return base.astype(dtype)


CONTAINERS = ("npz", "npz_compressed", "safetensors", "npy_named_npz", "garbage", "crafted")
XY_SHAPES = [[2, 1, 3, 3], [2], [1, 3, 2, 2], [1], [0, 1, 2, 2]]


@st.composite
def array_files(draw: st.DrawFn) -> tuple[str, dict[str, np.ndarray], int | None]:
    """(container, arrays, cut): arrays to store; cut truncates the written file at that many bytes."""
    arrs: dict[str, np.ndarray] = {}
    n = draw(st.integers(1, 4))
    often = OFTEN
    if draw(often):
        x = draw(arrays([4, 4, 4, 0, 1, 2, 3, 5], n, good=draw(often)))
        arrs["x" if draw(often) else draw(st.sampled_from(["X", "images"]))] = x
    if draw(often):
        arrs["y"] = draw(arrays([1, 1, 1, 0, 2], n, good=draw(often)))
    if not draw(often):
        arrs[draw(names)] = draw(arrays([1, 2], n, good=False))
    cut = None if draw(often) or draw(often) else draw(st.integers(0, 400))
    plain = st.sampled_from(["npz", "safetensors"])
    container = draw(plain if draw(often) else st.sampled_from(CONTAINERS))
    if container == "crafted":
        arrs = {"": np.frombuffer(draw(crafted_safetensors(["x", "y"], XY_SHAPES)), np.uint8)}
    return container, arrs, cut


def write_array_file(tmp: Path, container: str, arrs: dict[str, np.ndarray], cut: int | None) -> Path:
    from safetensors.numpy import save_file

    suffix = ".safetensors" if container == "safetensors" else ".npz"
    path = tmp / f"data{suffix}"
    if container == "crafted":
        path = path.with_suffix(".safetensors")
        path.write_bytes(arrs[""].tobytes())
    elif container == "garbage":
        path.write_bytes(bytes(range(256)) * 2)
    elif container == "npy_named_npz":
        with path.open("wb") as f:
            np.save(f, next(iter(arrs.values()), np.zeros(3)), allow_pickle=True)
    elif container == "safetensors" and all(a.dtype != object for a in arrs.values()):
        save_file({k: np.ascontiguousarray(a) for k, a in arrs.items()}, str(path))
    elif container == "npz_compressed":
        np.savez_compressed(path, **arrs)
    else:
        np.savez(path.with_suffix(".npz"), **arrs)
        path = path.with_suffix(".npz")
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    return path


@examples(150)
@given(spec=array_files(), size=SIZES, labelled=st.booleans())
def test_array_files(spec, size, labelled) -> None:
    with scratch() as tmp:
        path = write_array_file(tmp, *spec)
        result = outcome(load_examples, path, size=size, labelled=labelled)
        if result is not None:
            check_examples(result, labelled=labelled, size=size)


@examples(15)
@given(text=st.text(max_size=30), suffix=st.sampled_from([".npz", ".safetensors", ".png", ""]))
def test_examples_paths_that_are_not_data(text, suffix) -> None:
    with scratch() as tmp:
        path = tmp / (text.replace("/", "_").replace("\x00", "_")[:40] + suffix)
        assert outcome(load_examples, path) is None  # nothing there, or a folder of no images
