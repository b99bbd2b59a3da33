"""Plugins: modules outside eis that register tools, tracks, datasets, architectures, flaws, case kinds and
suites when imported. Two ways in, both imported by :func:`load_plugins`:

- **Entry points** (as pytest and Ray do): an installed distribution declares, in its ``pyproject.toml``::

      [project.entry-points."eis.plugins"]
      leaves = "eis_leaves.plugin"        # a module that registers things at import

  Every module of the ``eis.plugins`` group is imported once per process, before the modules of
  ``$EIS_PLUGINS``; installing the package is all it takes.
- **``$EIS_PLUGINS``** ``="pkg.mod1,pkg.mod2"``: modules imported on every call, for code that is not
  installed (the tests' fakes) or is chosen per run (shadow calibration).

This module is low in the layers (the zoo calls it when it reads a suite) and imports nothing of eis's
but its errors.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from eis.errors import EisError

ENTRY_POINT_GROUP = "eis.plugins"
PLUGINS_ENV = "EIS_PLUGINS"

# This process's entry-point modules once they have all been imported, or the error that stopped it.
_ENTRY_POINTS: list[str] | EisError | None = None


def load_entry_points(*, rescan: bool = False) -> list[str]:
    """Import every module of the ``eis.plugins`` entry-point group (once per process); their names.

    A module that fails to import is an EisError of one line naming the distribution, the entry point and
    the module; the same error is raised again by later calls. ``rescan`` looks again (for a session or a
    test that installed a package after the first call); modules imported before are not run twice.
    """
    global _ENTRY_POINTS
    if rescan:
        _ENTRY_POINTS = None
    if isinstance(_ENTRY_POINTS, EisError):
        raise EisError(str(_ENTRY_POINTS))
    if _ENTRY_POINTS is not None:
        return list(_ENTRY_POINTS)
    from importlib.metadata import entry_points

    _ENTRY_POINTS = []  # a plugin that reads a suite while it is imported finds the loading under way
    loaded, failure = [], None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # any error at import: a plugin must not take eis down with a traceback
            failure = failure or EisError(_one_line(_failure(ep, exc)))
            continue
        loaded.append(ep.value)
    _ENTRY_POINTS = failure or loaded
    if failure is not None:
        raise failure
    return list(loaded)


def load_plugins() -> list[str]:
    """Import the entry-point plugins (once per process), then the modules named in ``$EIS_PLUGINS``
    (comma-separated); returns the names of both.

    A ``$EIS_PLUGINS`` module that registers from the environment defines ``from_environment()``: it is
    called on every load, so that a worker process whose modules were imported before it adopted its
    parent's environment (a forkserver's preload) registers what the parent has now.
    """
    installed = load_entry_points()
    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise EisError(f"cannot import plugin module {name!r} named in ${PLUGINS_ENV}: {exc}") from None
        refresh = getattr(module, "from_environment", None)
        if callable(refresh):
            refresh()
    return [*installed, *names]


def _failure(ep: Any, exc: Exception) -> str:
    dist = getattr(ep, "dist", None)
    where = f"distribution {dist.name!r}" if dist is not None else "an unknown distribution"
    return (
        f"cannot import eis plugin {ep.value!r} (entry point {ep.name!r} of {where}, group "
        f"{ENTRY_POINT_GROUP!r}): {type(exc).__name__}: {exc}"
    )


def _one_line(message: str) -> str:
    return " ".join(message.split())
