"""``eis tools`` and ``eis tracks``: what the one registry holds."""

from __future__ import annotations

import typer
from rich.table import Table

from eis.cli import app
from eis.cli.common import console, safe, user_errors
from eis.cli.listing import cached_rows


@app.command("tools")
@user_errors
def tools(
    family: str = typer.Option(None, "--family", help="Only this family (attribution, detection, ...)."),
) -> None:
    """List the registered tools (controls included) with their default settings."""
    from eis.errors import unknown

    rows = cached_rows("tools", _tool_rows, unless_imported="eis.tools.base")
    families = sorted({row[1] for row in rows})
    if family is not None and family not in families:
        raise unknown("family", family, families)
    table = Table()  # names are never wrapped or cut, at any terminal width; the settings fold instead
    table.add_column("tool", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("control")
    table.add_column("default settings", overflow="fold")
    for row in rows:
        if family is None or row[1] == family:
            table.add_row(*(safe(cell) for cell in row))
    console.print(table)


def _tool_rows() -> list[list[str]]:
    from eis.runner.plugins import load_builtins
    from eis.tools.base import TOOLS, list_tools

    load_builtins()
    rows = []
    for name in list_tools():
        cls = TOOLS.get(name)
        settings = ", ".join(f"{k}={v!r}" for k, v in cls().settings().items())
        rows.append([name, cls.family, "yes" if cls.control else "", settings])
    return rows


@app.command("tracks")
@user_errors
def tracks() -> None:
    """List the registered tracks and the question each asks."""
    table = Table()
    for column in ("track", "family", "headline"):
        table.add_column(column, no_wrap=True)
    table.add_column("default")
    table.add_column("question", overflow="fold")
    for row in cached_rows("tracks", _track_rows, unless_imported="eis.tracks.base"):
        table.add_row(*(safe(cell) for cell in row))
    console.print(table)


def _track_rows() -> list[list[str]]:
    from eis.runner import DEFAULT_TRACKS
    from eis.runner.plugins import load_builtins
    from eis.tracks.base import TRACKS

    load_builtins()
    rows = []
    for name in TRACKS.names():
        track = TRACKS.get(name)
        rows.append(
            [name, track.family, track.headline, "yes" if name in DEFAULT_TRACKS else "", track.summary]
        )
    return rows
