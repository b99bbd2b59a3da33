"""Plugins and suites: how code outside eis adds tools, tracks and suites to ``eis bench``.

``EIS_PLUGINS="pkg.mod1,pkg.mod2"`` names modules that the CLI (and every runner worker process) imports
before it resolves names; a plugin module registers tools (``@register_tool``), tracks
(``@register_track``) and suites (``register_suite``) at import time. The tests use it to run fake tools
and tracks in a real ``eis`` subprocess.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from eis.errors import EisError, unknown
from eis.registry import Registry

PLUGINS_ENV = "EIS_PLUGINS"

SUITES: Registry[Callable[[], Sequence[Any]]] = Registry("suite")


def register_suite(name: str, build: Callable[[], Sequence[Any]], *, replace: bool = False) -> None:
    """Add a suite: ``build()`` returns its cases (objects with the ``eis.zoo`` Case API)."""
    SUITES.register(name, build, replace=replace)


def load_plugins() -> list[str]:
    """Import the modules named in ``$EIS_PLUGINS`` (comma-separated); returns their names.

    A plugin module that registers from the environment defines ``from_environment()``: it is called on
    every load, so that a worker process whose modules were imported before it adopted its parent's
    environment (a forkserver's preload) registers what the parent has now.
    """
    names = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise EisError(f"cannot import plugin module {name!r} named in ${PLUGINS_ENV}: {exc}") from None
        refresh = getattr(module, "from_environment", None)
        if callable(refresh):
            refresh()
    return names


def load_builtins() -> None:
    """Register the built-in tools and tracks (and the plugins)."""
    from eis.tools.base import _load_builtin_tools

    _load_builtin_tools()
    import eis.tracks

    loader = getattr(eis.tracks, "load_builtin_tracks", None)
    if loader is not None:
        loader()
    load_plugins()


def resolve_suite(name: str, build: Callable[[str], Sequence[Any]] | None = None) -> list[Any]:
    """The cases of suite ``name``: a plugin suite, else the zoo's, built where not cached by ``build``
    (default ``eis.zoo.build_suite``; the CLI passes its progress-bar variant)."""
    if name in SUITES:
        return list(SUITES.get(name)())
    import eis.zoo

    if not name.endswith(".toml") and name not in eis.zoo.builtin_suites():
        raise unknown("suite", name, set(SUITES.names()) | set(eis.zoo.builtin_suites()))
    return list((build or eis.zoo.build_suite)(name))
