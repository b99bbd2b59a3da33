"""``eis results``: look into and export the results store."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, safe, user_errors

results_app = typer.Typer(help="Look into and export the results store.", no_args_is_help=True)
app.add_typer(results_app, name="results")

_STORE = typer.Option(None, "--store", help="Results store (default: $EIS_STORE or EIS_HOME).")


@results_app.command("export")
@user_errors
def export_cmd(
    fmt: str = typer.Option("csv", "--format", help="csv, json or parquet."),
    out: Path = typer.Option(None, "--out", help="Output file (default: eis-results.<format>)."),
    store: Path = _STORE,
) -> None:
    """Write every stored cell to a CSV, JSON or Parquet file."""
    from eis.errors import unknown
    from eis.results import EXPORT_FORMATS, export, load

    if fmt not in EXPORT_FORMATS:
        raise unknown("export format", fmt, EXPORT_FORMATS)
    df = load(store)
    path = export(df, fmt, out or Path(f"eis-results.{fmt}"))
    console.print(f"{len(df)} cells written to {safe(path)}", highlight=False)


@results_app.command("info")
@user_errors
def info_cmd(store: Path = _STORE) -> None:
    """Where the store is, its schema, and its cells per track and status."""
    from eis.results import load, open_store

    with open_store(store, create=False) as st:
        path, version, check = st.path, st.schema_version(), st.integrity_check()
        df = load(st)
    console.print(
        f"store {safe(path)} (schema {version}, integrity {safe(check)}): {len(df)} cells", highlight=False
    )
    if len(df):
        counts = df.groupby(["track", "status"]).size().unstack(fill_value=0)
        console.print("\n".join(safe(line) for line in counts.to_string().splitlines()))
