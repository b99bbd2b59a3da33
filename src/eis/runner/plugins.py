"""Plugins and suites: how code outside eis adds tools, tracks and suites to ``eis bench``.

Plugin modules come from installed packages (entry points of the ``eis.plugins`` group) and from
``EIS_PLUGINS="pkg.mod1,pkg.mod2"``; the CLI (and every runner worker process) imports them before it
resolves names (:func:`eis.plugins.load_plugins`). A plugin module registers tools (``@register_tool``),
tracks (``@register_track``), datasets, architectures, case kinds and suites (``register_suite``) at
import time. The tests use ``$EIS_PLUGINS`` to run fake tools and tracks in a real ``eis`` subprocess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eis.errors import unknown
from eis.plugins import ENTRY_POINT_GROUP, PLUGINS_ENV, load_entry_points, load_plugins
from eis.registry import Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "SUITES",
    "load_builtins",
    "load_entry_points",
    "load_plugins",
    "register_suite",
    "resolve_suite",
]

SUITES: Registry[Callable[[], Sequence[Any]]] = Registry("suite")


def register_suite(name: str, build: Callable[[], Sequence[Any]], *, replace: bool = False) -> None:
    """Add a suite: ``build()`` returns its cases (objects with the ``eis.zoo`` Case API)."""
    SUITES.register(name, build, replace=replace)


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
