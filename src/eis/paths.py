"""Where eis keeps its cache (zoo artifacts, results store): ``EIS_HOME`` or a user cache directory."""

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
