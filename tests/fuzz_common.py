"""Shared pieces of the Hypothesis fuzz suites (tests/test_fuzz_*.py): the contract every loader keeps.

A loader either returns a valid result or raises :class:`eis.errors.EisError` with a one-line message;
any other exception propagates and fails the test (Hypothesis then shrinks it to a minimal input). The
CLI exits with code 2 and one ``error:`` line, no traceback, and leaves ``--out`` absent or empty.
Example counts are fixed per test; the seed is fixed by the ``ci`` profile (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import currently_in_test_context, event
from hypothesis import strategies as st

from eis.errors import EisError

PROGRESS = re.compile(r"audit: [a-z ]+: \d+/\d+, elapsed \d+:\d\d:\d\d")


class Reached(Exception):
    """Raised by a stub where a CLI command has loaded and checked everything and would start the real
    (slow) work: the inputs were valid."""


def one_line(exc: BaseException) -> None:
    assert isinstance(exc, EisError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"message is not one line: {msg!r}"


def refused(fn: Callable[..., Any], *args: Any, match: str | None = None, **kwargs: Any) -> str:
    """The one-line EisError ``fn`` raises (matching ``match``)."""
    with pytest.raises(EisError, match=match) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when it raised a one-line EisError (other exceptions propagate)."""
    try:
        result = fn(*args, **kwargs)
    except EisError as exc:
        one_line(exc)
        _event("refused: " + re.sub(r"'[^']*'|\"[^\"]*\"|\(.*|\d+", "_", str(exc))[:50])
        return None
    _event("loaded")
    return result


def _event(what: str) -> None:
    """Count outcomes for ``--hypothesis-show-statistics`` (outside a Hypothesis test: nothing)."""
    if currently_in_test_context():
        event(what)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per Hypothesis example (function-scoped fixtures are shared across examples)."""
    with tempfile.TemporaryDirectory(prefix="eis-fuzz-") as d:
        try:
            yield Path(d)
        finally:  # chmod 000 files and folders: make them removable again
            for root, dirs, files in os.walk(d):
                for name in dirs + files:
                    p = Path(root) / name
                    if not p.is_symlink():
                        with contextlib.suppress(OSError):
                            p.chmod(0o755)


def check_examples(
    result: tuple[torch.Tensor, torch.Tensor | None, list[str] | None], *, labelled: bool, size: int | None
) -> None:
    """A loaded ``load_examples`` result is usable: float32 (N, C, H, W) in [0, 1], int64 labels >= 0."""
    x, y, names = result
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.ndim == 4, (x.dtype, x.shape)
    assert min(x.shape) > 0, x.shape
    assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1
    if size is not None:
        assert tuple(x.shape[-2:]) == (size, size)
    if labelled:
        assert y is not None
    if y is not None:
        assert y.dtype == torch.int64 and tuple(y.shape) == (x.shape[0],), (y.dtype, y.shape)
        assert int(y.min()) >= 0
    if names is not None:
        assert len(names) == x.shape[0] and all(isinstance(n, str) for n in names)


def check_cli(res: Any, out: Path) -> bool:
    """A CLI run refused its input properly (False), or reached the stubbed real work (True)."""
    assert "Traceback" not in res.output, res.output
    if isinstance(res.exception, Reached):
        _event("reached the real work")
        return True
    assert res.exit_code == 2, (res.exit_code, res.output, repr(res.exception))
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.output.strip().splitlines()
    if lines and lines[0].startswith("Usage:"):  # click's own option parsing (e.g. --size 0): its panel
        assert "Invalid value" in res.output or "No such option" in res.output or "Missing" in res.output
        _event("usage error")
    else:
        # the audit's plain progress lines ("audit: detectors: 0/2, elapsed 0:00:00") start before the
        # detector names are checked (eis.audit.run); any other line before the error is a failure
        while len(lines) > 1 and PROGRESS.fullmatch(lines[0]):
            lines = lines[1:]
            _event("error after progress lines")
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
        _event("refused: " + re.sub(r"'[^']*'|\"[^\"]*\"|\(.*|\d+", "_", lines[0][7:])[:50])
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    return False


# ------------------------------------------------------------------ strategies shared by the suites

# file names: unicode, spaces, leading dots, control characters (no "/" or NUL, which no file name holds)
NAME_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="/\x00")
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and len(s.encode()) < 200
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def examples(n: int) -> Any:
    """``@settings`` with ``n`` examples under the ``ci`` profile (20 n under ``explore``)."""
    from hypothesis import settings

    scale = 20 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
    return settings(max_examples=n * scale)


ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}  # fmt: skip


@st.composite
def crafted_safetensors(draw: st.DrawFn, keys: list[str], shapes: list[list[int]]) -> bytes:
    """A safetensors file built by hand: its JSON header drawn (dtypes, shapes, offsets, metadata),
    sometimes consistent with its data (then it loads), sometimes not."""
    import json
    import struct

    header: dict[str, Any] = {}
    offset, consistent = 0, draw(st.booleans())
    for key in draw(st.lists(st.sampled_from(keys) | names, max_size=4, unique=True)):
        dtype = draw(st.sampled_from(sorted(ST_ITEMSIZE) + ["F4", "XYZ", ""]))
        shape = draw(st.sampled_from(shapes) | st.lists(st.integers(-1, 5) | st.just(2**40), max_size=5))
        n = 1
        for d in shape:
            n *= max(d, 0)
        size = n * ST_ITEMSIZE.get(dtype, 1) if consistent and n < 4096 else draw(st.integers(0, 64))
        start = offset if consistent or draw(st.booleans()) else draw(st.integers(0, 100))
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [start, start + size]}
        offset = max(offset, start + size)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4) | json_values))
    blob = json.dumps(header).encode() + b" " * draw(st.integers(0, 7))
    length = len(blob) if consistent or draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
    data = draw(st.binary(min_size=offset, max_size=offset)) if consistent else draw(st.binary(max_size=80))
    return struct.pack("<Q", length) + blob + data


# a gate drawn before each optional corruption: mostly True, so that most examples keep most parts valid
OFTEN = st.sampled_from([True] * 6 + [False])
