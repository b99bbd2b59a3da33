"""Where eis keeps its cache (zoo artifacts, results store): ``EIS_HOME`` or a user cache directory; and
writing one file there atomically. Imports no torch, so that listing commands stay fast."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def eis_home() -> Path:
    """The root of eis's on-disk state; set ``EIS_HOME`` to move it."""
    env = os.environ.get("EIS_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("eis"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def zoo_dir() -> Path:
    """Where the zoo's case artifacts live: ``eis_home() / "zoo"``."""
    path = eis_home() / "zoo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)`` through a temporary file beside it and a rename: a killed or failed write
    never leaves a partial file under the final name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
