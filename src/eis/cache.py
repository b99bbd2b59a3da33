"""The on-disk cache for everything eis learns once and reuses: atomic folders and verified tensors.

Four pieces, shared by zoo artifacts (:mod:`eis.zoo.artifact`), trained helper modules (VAE generators, the
synthesis judge) and the state of detectors that learn:

- :func:`atomic_dir` writes a folder under a temporary name and renames it into place, so a killed
  process never leaves a half-written folder under the final name, and when two processes build the same
  entry at once the first complete copy wins; :func:`eis.paths.write_text_atomic` does the same for one file
  (audit and repair pages, calibration tables).
- :func:`cached_state` keeps learned tensors in ``EIS_HOME/<kind>/<digest of key>/``:
  ``weights.safetensors`` plus ``meta.json`` (the key, the SHA-256 of the weights, and notes). A key or
  hash mismatch, or an unreadable file, means a corrupt entry: it is recomputed, never loaded. Nothing is
  ever unpickled. Computing takes an exclusive lock on a file under ``EIS_HOME/.locks`` (POSIX
  ``flock``, released by the kernel if the process dies), so when two workers need the same entry at once
  one computes it and the other waits and loads it, instead of both training it.
- :class:`Prep` names such work so that the benchmark runner can do it once, ahead of the cells that need
  it, with different entries computed side by side on different workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eis.paths import eis_home

WEIGHTS, META = "weights.safetensors", "meta.json"


@dataclasses.dataclass(frozen=True)
class Prep:
    """Work that several benchmark cells share and that fills this cache (a synthesis judge per dataset, a
    detector fitted per training population): ``fn()``, named by ``key``.

    Tracks list a cell's preps (``Track.prepare``); the runner runs each distinct ``key`` once, in parallel
    across its workers, before the cells (:mod:`eis.runner.prepare`), so that two workers never train the
    same module at once and different modules train side by side. ``fn`` must pickle (a module-level
    function or a ``functools.partial`` of one). A prep only fills the cache: a cell whose prep failed does
    the work itself, so results never depend on whether a prep ran.
    """

    key: str
    fn: Callable[[], Any]


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(key: Any) -> str:
    """A short content address (16 hex digits) for a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; when the block succeeds, rename it to ``final``.

    If ``final`` appeared meanwhile (another process built the same entry), that copy is kept, unless
    ``replace`` swaps the new one in. The temporary folder never outlives the block.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def entry_lock(final: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``final``'s entry across processes (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent workers may compute an entry twice, which is only waste
        yield
        return
    lock = eis_home() / ".locks" / f"{digest(str(final))}.lock"  # outside the entries' folders
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(final: Path, key: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The entry's tensors and notes, or None when it is missing; a corrupt entry is removed."""
    if not final.is_dir():
        return None
    try:
        meta = json.loads((final / META).read_text())
        if meta.get("key") != key or sha256(final / WEIGHTS) != meta.get("sha256"):
            raise ValueError("key or hash mismatch")
        return load_file(str(final / WEIGHTS)), meta.get("notes", {})
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        shutil.rmtree(final, ignore_errors=True)  # corrupt: recompute
        return None


def cached_state(
    kind: str, key: Any, compute: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Tensors and notes for ``key``: from ``EIS_HOME/<kind>/``, or ``compute()``d and cached there.

    ``key`` is normalised through JSON (non-JSON values become strings) before hashing and comparing.
    Returns the tensors (CPU), the JSON notes ``compute`` returned, and the entry's folder.
    """
    key = json.loads(json.dumps(key, sort_keys=True, default=str))
    final = eis_home() / kind / digest(key)
    found = _load(final, key)
    if found is not None:
        return (*found, final)
    with entry_lock(final):
        found = _load(final, key)  # another process may have computed it while this one waited
        if found is not None:
            return (*found, final)
        tensors, notes = compute()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        notes = json.loads(json.dumps(notes, default=str))
        with atomic_dir(final) as tmp:
            save_file(tensors, str(tmp / WEIGHTS))
            meta = {"key": key, "sha256": sha256(tmp / WEIGHTS), "notes": notes}
            (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return tensors, notes, final
