"""Fast listings: ``eis tools``, ``eis tracks``, ``eis zoo suites`` and ``eis zoo list`` answer from a
cache of their rows.

Building those rows imports every tool (torch, Captum, scikit-learn, transformers): seconds on a quiet
machine and tens of seconds on a busy one, to print a table that changes only when code does. So the rows
are kept in ``$EIS_HOME/listings/<name>.json`` under a fingerprint of everything they are computed from:
eis's version, the size and modification time of every source file of eis and of each installed
``eis.plugins`` entry point's package, and the entry points themselves (for ``eis zoo list``, also the
size and modification time of every file of every built case). A listing whose fingerprint
matches is printed without importing any of it; any change rebuilds it. With ``$EIS_PLUGINS`` set, plugin
modules may register from the environment, and in a process that has imported the registry already, code
may have registered entries of its own: listings are then always built fresh.
``benchmarks/bench_cli_latency.py`` measures both paths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import eis
from eis.paths import eis_home, write_text_atomic, zoo_dir
from eis.plugins import ENTRY_POINT_GROUP, PLUGINS_ENV

Rows = list[list[Any]]  # JSON values


SOURCES = (".py", ".toml")  # the files a registry's rows are computed from


def _tree_state(root: Path, suffixes: tuple[str, ...] | None = SOURCES) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file under ``root`` ending in one of ``suffixes`` (None: every
    file); hidden folders (a build in progress) and ``__pycache__`` left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if suffixes is None or name.endswith(suffixes):
                st = os.stat(os.path.join(dirpath, name))
                out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return out


def zoo_state() -> list[tuple[str, int, int]]:
    """Every file of every built case: the built cases' listing changes whenever any of them does."""
    return _tree_state(zoo_dir(), None)


def fingerprint(state: object = None) -> str:
    """What a listing depends on: eis's version and sources, the installed plugins and their sources, and
    ``state`` (e.g. :func:`zoo_state` for the built cases)."""
    parts: list[object] = [eis.__version__, _tree_state(Path(eis.__file__).parent), state]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        parts.append([ep.name, ep.value, getattr(dist, "version", None)])
        top = ep.value.split(":")[0].split(".")[0]
        spec = importlib.util.find_spec(top)  # locates a top-level package without importing it
        if spec is not None and spec.origin:
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                parts.append(_tree_state(origin.parent))
            elif origin.exists():
                st = origin.stat()
                parts.append([st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def cached_rows(
    name: str, build: Callable[[], Rows], *, state: object = None, unless_imported: str | None = None
) -> Rows:
    """The rows of listing ``name``: from the cache when its fingerprint (with ``state``) matches, else
    ``build()`` (which may import anything) and stored for next time.

    When this process has already imported ``unless_imported`` (the registry the rows are read from), code
    run in it may have registered entries of its own (a notebook, a test, a script calling the CLI
    in-process) and importing costs nothing more: the rows are built fresh and not stored."""
    if os.environ.get(PLUGINS_ENV, "").strip() or (unless_imported and unless_imported in sys.modules):
        return build()
    key = fingerprint(state)
    path = eis_home() / "listings" / f"{name}.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("fingerprint") == key and isinstance(kept.get("rows"), list):
            return kept["rows"]
    except (OSError, ValueError, AttributeError):
        pass  # missing, unreadable or damaged: rebuilt below
    rows = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"fingerprint": key, "rows": rows}))
    return rows
