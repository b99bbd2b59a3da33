"""Shared CLI plumbing: the rich console and the EisError -> one-line message + exit code 2 mapping."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from eis.errors import EisError

LOG_WIDTH = 200  # columns when output is not a terminal: tables are printed whole, not cut to 80


def _console(stderr: bool = False) -> Console:
    """A rich console; printing to a file or a pipe (CI logs), it is wide enough for the leaderboards."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = LOG_WIDTH
    return out


console = _console()
err_console = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# C0 controls (newline and tab too: a message is one line), DEL and C1 controls: an ANSI escape in a file
# name or a tool's error must not reach the terminal as one
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def safe(text: object, *, markup: bool = True) -> str:
    """``text`` for a rich console: markup escaped and control characters shown as ``\\xNN`` escapes, so
    that names, paths and messages from outside (file names, suite files, stores, tools' errors) print as
    they are and cannot style, move or clear the terminal. ``markup=False``: for text printed without
    markup (the plain progress lines), control characters only."""
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return escape(shown) if markup else shown


def user_errors(fn: F) -> F:
    """Decorate a command so that bad input prints ``error: <message>`` and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EisError as exc:
            err_console.print(f"[bold red]error:[/] {safe(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def json_object(text: str | None, what: str) -> dict | None:
    """Parse an option holding a JSON object (None when not given); anything else is a one-line error."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
        value = None
    if not isinstance(value, dict):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise EisError(f"{what} must be a JSON object; got {shown!r}")
    return value


def floats(text: str | None, what: str) -> list[float] | None:
    """Parse an option holding comma-separated numbers, one per channel (None when not given)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise EisError(f"{what} must be comma-separated numbers, one per channel; got {text!r}") from None


def user_model(
    path: Any,
    arch: str | None,
    arch_kwargs: str | None,
    trust_pickle: bool,
    mean: str | None,
    std: str | None,
) -> Any:
    """The model of ``eis audit`` / ``eis repair``: loaded (``eis.usermodel``), normalised when asked."""
    from eis.usermodel import Normalized, load_model

    model = load_model(path, arch, json_object(arch_kwargs, "--arch-kwargs"), trust_pickle=trust_pickle)
    m, s = floats(mean, "--mean"), floats(std, "--std")
    if (m is None) != (s is None):
        raise EisError("--mean and --std go together; give both or neither")
    return model if m is None else Normalized(model, m, s)
