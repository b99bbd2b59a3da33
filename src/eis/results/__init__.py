"""The results store and its DataFrame view: ``eis.results.load()`` is what notebooks and the report read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eis.results.store import (
    CELL_COLUMNS,
    SCHEMA_VERSION,
    Store,
    default_store_path,
    open_store,
)

__all__ = [
    "CELL_COLUMNS",
    "EXPORT_FORMATS",
    "SCHEMA_VERSION",
    "Store",
    "default_store_path",
    "export",
    "flat",
    "load",
    "open_store",
]


def load(path: str | Path | Store | None = None) -> pd.DataFrame:
    """Every stored cell as one DataFrame row.

    Columns: those ``Track.summarize`` expects (case_id, case_name, dataset, arch, flaw, tool, family,
    control, track, status, error, runtime_s, peak_mem_mb, scores, items, extras) plus key, settings,
    track_version, seed, versions, rss_start_mb, peak_gpu_mb, device, host, finished_at. ``scores``,
    ``items``, ``extras``, ``settings`` and ``versions`` hold dicts.
    """
    store = open_store(path, create=False)
    try:
        records = store.records()
    finally:
        if not isinstance(path, Store):
            store.close()
    df = pd.DataFrame.from_records(records, columns=list(CELL_COLUMNS))
    df["control"] = df["control"].astype(bool)
    for col in ("runtime_s", "peak_mem_mb", "rss_start_mb", "peak_gpu_mb", "finished_at"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("flaw", "error", "case_name", "dataset", "arch", "family"):
        df[col] = df[col].fillna("").astype(str)
    return df


EXPORT_FORMATS = ("csv", "json", "parquet")


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """A flat table for CSV/Parquet: one ``score.<name>`` column per score, dict columns as JSON text."""
    import json

    out = df.copy()
    scores = pd.DataFrame.from_records(list(df["scores"]), index=df.index) if len(df) else pd.DataFrame()
    for name in sorted(scores.columns):
        out[f"score.{name}"] = pd.to_numeric(scores[name], errors="coerce")
    for col in ("settings", "versions", "scores", "items", "extras"):
        out[col] = df[col].map(lambda v: json.dumps(v, sort_keys=True))
    return out


def export(df: pd.DataFrame, fmt: str, path: str | Path) -> Path:
    """Write ``df`` (from :func:`load`) as csv, json (records, nested dicts kept) or parquet."""
    from eis.errors import unknown

    if fmt not in EXPORT_FORMATS:
        raise unknown("export format", fmt, EXPORT_FORMATS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        flat(df).to_csv(path, index=False)
    elif fmt == "json":
        df.to_json(path, orient="records", indent=1)
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            from eis.errors import EisError

            raise EisError(
                "parquet export needs pyarrow: pip install pyarrow (or use --format csv|json)"
            ) from None
        flat(df).to_parquet(path, index=False)
    return path
