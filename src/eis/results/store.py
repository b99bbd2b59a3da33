"""The results store: one SQLite file (WAL mode), one row per case x tool x track cell.

Why SQLite: a single file that several ``eis bench`` processes can append to at once (WAL + busy timeout +
upsert on the cell key + one short transaction per cell), that survives a SIGKILL (a cell is committed or
absent, never half-written) and that needs no server. Dicts are stored as JSON text and gallery images as
PNG bytes: nothing is ever pickled.

The file is identified by ``PRAGMA application_id`` and a ``meta`` table holding the schema version. A file
that is not an eis store is refused and never written to; a store written by a newer schema is refused
with a message saying so.

A cell's ``status`` is one of ``STATUSES``: ``ok`` (scored), ``failed`` (the tool or track raised, returned
a non-finite score, timed out or lost its worker; ``error`` says how) or ``not applicable`` (the tool
refused the case with :class:`eis.errors.ToolRefusal`; ``error`` holds its one-line reason). Failed and
not-applicable cells carry no scores; both are finished cells, but only failed ones are re-run by
``eis bench --retry-failed``.
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from eis.errors import EisError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45495352  # "EISR": marks the SQLite file as an eis results store
STORE_ENV = "EIS_STORE"
_SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60.0
OK, FAILED, NOT_APPLICABLE = "ok", "failed", "not applicable"
STATUSES = (OK, FAILED, NOT_APPLICABLE)

# Column name -> SQL type. JSON columns hold dicts/lists as text.
CELL_COLUMNS: dict[str, str] = {
    "key": "TEXT PRIMARY KEY",
    "case_id": "TEXT NOT NULL",
    "case_name": "TEXT",
    "dataset": "TEXT",
    "arch": "TEXT",
    "flaw": "TEXT",
    "tool": "TEXT NOT NULL",
    "family": "TEXT",
    "control": "INTEGER",
    "settings": "TEXT",
    "track": "TEXT NOT NULL",
    "track_version": "TEXT",
    "status": "TEXT NOT NULL",  # one of STATUSES (see the module docstring)
    "error": "TEXT",
    "runtime_s": "REAL",
    "peak_mem_mb": "REAL",
    "rss_start_mb": "REAL",
    "peak_gpu_mb": "REAL",
    "seed": "INTEGER",
    "versions": "TEXT",
    "scores": "TEXT",
    "items": "TEXT",
    "extras": "TEXT",
    "device": "TEXT",
    "host": "TEXT",
    "finished_at": "REAL",
}
JSON_COLUMNS = ("settings", "versions", "scores", "items", "extras")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cells ({})".format(", ".join(f"{c} {t}" for c, t in CELL_COLUMNS.items())),
    "CREATE INDEX IF NOT EXISTS cells_track ON cells (track, tool)",
    "CREATE TABLE IF NOT EXISTS gallery (key TEXT NOT NULL, name TEXT NOT NULL, png BLOB NOT NULL,"
    " PRIMARY KEY (key, name))",
]


def default_store_path() -> Path:
    """``$EIS_STORE`` if set, else ``eis_home()/results.sqlite``."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    from eis.paths import eis_home

    return eis_home() / "results.sqlite"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy/torch values; NaN and inf become None (JSON has no such numbers)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor, without importing torch
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys, no NaN) used for storage and cache keys."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def encode_png(image: Any) -> bytes:
    """An (H, W) or (C, H, W) / (H, W, C) float array in [0, 1] (or uint8) as PNG bytes."""
    from PIL import Image

    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    channels_first = arr.ndim == 3 and arr.shape[0] in (1, 3, 4)
    if channels_first and (arr.shape[-1] not in (1, 3, 4) or arr.shape[0] < arr.shape[-1]):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"gallery image must be (H, W) or (C, H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


class Store:
    """An open results store (see :func:`open_store`); close with ``close()`` or use it in ``with``."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._check_file(create)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = self.path.resolve().as_uri() + ("" if create else "?mode=rw")
        self._con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._init_or_check(create)
        except BaseException:
            self._con.close()
            raise

    # -- opening -------------------------------------------------------------------------------------
    def _check_file(self, create: bool) -> None:
        p = self.path
        if p.is_dir():
            raise EisError(
                f"results store {p} is a directory; give a file path (e.g. {p / 'results.sqlite'})"
            )
        if not p.exists():
            if not create:
                raise EisError(f"no results store at {p}; run `eis bench SUITE` first or pass --store")
            return
        with open(p, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise EisError(f"{p} is not an eis results store (not an SQLite file); refusing to touch it")

    def _init_or_check(self, create: bool) -> None:
        con = self._con
        try:
            empty = self._check_identity()  # read-only look first: never alter a foreign file
        except sqlite3.DatabaseError as exc:
            raise EisError(
                f"{self.path} is not a readable eis results store ({exc}); refusing to touch it"
            ) from None
        if empty and not create:
            raise EisError(f"{self.path} is an empty file, not a results store; run `eis bench SUITE` first")
        mode = self._enable_wal()
        if str(mode).lower() != "wal":
            raise EisError(f"could not put results store {self.path} in WAL mode (got {mode!r})")
        con.execute("PRAGMA synchronous = NORMAL")
        if not empty:
            return
        with self.transaction():  # re-check under the write lock: two processes may create it at once
            if self._check_identity():
                con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for stmt in _SCHEMA:
                    con.execute(stmt)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT INTO meta VALUES ('created_at', ?)", (str(time.time()),))

    def _enable_wal(self) -> str:
        """Switch to WAL. While another process is switching or creating the same new file, SQLite answers
        "database is locked" at once (no busy handler for a journal-mode change), so retry until the busy
        timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _check_identity(self) -> bool:
        """Raise unless the file is an empty database or an eis store of a known schema; True if empty."""
        con = self._con
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and app_id == 0:
            return True
        if app_id != APPLICATION_ID or "meta" not in tables:
            raise EisError(
                f"{self.path} is an SQLite file but not an eis results store; refusing to touch it"
            )
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else -1
        if version > SCHEMA_VERSION:
            raise EisError(
                f"results store {self.path} has schema version {version}, newer than this eis supports "
                f"({SCHEMA_VERSION}); upgrade eis or use another --store"
            )
        if version < SCHEMA_VERSION:
            raise EisError(
                f"results store {self.path} has old schema version {version} (this eis writes "
                f"{SCHEMA_VERSION}); move it aside to start a new store"
            )
        return False

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE takes the write lock up front: no upgrade deadlocks)."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------
    def put(self, record: Mapping[str, Any], gallery: Mapping[str, bytes] | None = None) -> None:
        """Insert or replace one cell (and its gallery PNGs) in one transaction."""
        row = {c: record.get(c) for c in CELL_COLUMNS}
        if row["key"] is None:
            raise ValueError("a cell record needs a key")
        for c in JSON_COLUMNS:
            row[c] = dumps(row[c] if row[c] is not None else {})
        row["control"] = int(bool(row["control"]))
        cols = list(CELL_COLUMNS)
        sql = (
            f"INSERT INTO cells ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(key) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols if c != 'key')}"
        )
        with self.transaction() as con:
            con.execute(sql, [row[c] for c in cols])
            con.execute("DELETE FROM gallery WHERE key = ?", (row["key"],))
            con.executemany(
                "INSERT INTO gallery (key, name, png) VALUES (?, ?, ?)",
                [(row["key"], name, sqlite3.Binary(png)) for name, png in (gallery or {}).items()],
            )

    # -- reading -------------------------------------------------------------------------------------
    def keys(self, *, status: str | None = None) -> set[str]:
        """Keys of the recorded cells (optionally only those with the given status)."""
        if status is None:
            return {r[0] for r in self._con.execute("SELECT key FROM cells")}
        return {r[0] for r in self._con.execute("SELECT key FROM cells WHERE status = ?", (status,))}

    def has(self, key: str, *, ok_only: bool = False, failed: bool = True) -> bool:
        """Whether ``key`` is recorded (``ok_only``: with status ok; ``failed=False``: not as failed)."""
        sql = "SELECT 1 FROM cells WHERE key = ?"
        if ok_only:
            sql += f" AND status = '{OK}'"
        if not failed:
            sql += f" AND status != '{FAILED}'"
        return self._con.execute(sql, (key,)).fetchone() is not None

    def count(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    def records(self) -> list[dict[str, Any]]:
        """All cells as dicts, JSON columns decoded, ``control`` as bool, ordered by key."""
        cur = self._con.execute(
            f"SELECT {', '.join(CELL_COLUMNS)} FROM cells ORDER BY track, tool, case_name, key"
        )
        out = []
        for values in cur:
            rec = dict(zip(CELL_COLUMNS, values, strict=True))
            for c in JSON_COLUMNS:
                rec[c] = json.loads(rec[c]) if rec[c] else {}
            rec["control"] = bool(rec["control"])
            out.append(rec)
        return out

    def gallery(self, keys: Iterable[str]) -> dict[str, dict[str, bytes]]:
        """PNG bytes by cell key then image name (insertion order kept)."""
        out: dict[str, dict[str, bytes]] = {}
        for key in keys:
            rows = self._con.execute("SELECT name, png FROM gallery WHERE key = ? ORDER BY rowid", (key,))
            imgs = {name: bytes(png) for name, png in rows}
            if imgs:
                out[key] = imgs
        return out

    def schema_version(self) -> int:
        return int(self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's own check: ``"ok"`` for an intact file."""
        return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path | Store | None = None, *, create: bool = True) -> Store:
    """Open (or, with ``create``, create) the store at ``path`` / ``$EIS_STORE`` / ``eis_home()``."""
    return path if isinstance(path, Store) else Store(path, create=create)
