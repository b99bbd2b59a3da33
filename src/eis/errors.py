"""User-facing errors: one line naming what was wrong and what is valid; the CLI maps them to exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class EisError(ValueError):
    """Bad input from a user (unknown name, out-of-range value, malformed file)."""


class ToolRefusal(EisError):
    """A tool declines an input it cannot handle correctly (e.g. an architecture it would get wrong)."""


def unknown(kind: str, name: object, valid: Iterable[str]) -> EisError:
    """Build the standard 'unknown X' error listing the valid choices."""
    choices = ", ".join(sorted(valid))
    return EisError(f"unknown {kind} {name!r}; valid: {choices}")
