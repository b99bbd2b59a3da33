"""``eis tools`` and ``eis tracks``: what the one registry holds."""

from __future__ import annotations

import typer
from rich.table import Table

from eis.cli import app
from eis.cli.common import console, user_errors


@app.command("tools")
@user_errors
def tools(family: str = typer.Option(None, "--family", help="attribution, detection or synthesis.")) -> None:
    """List the registered tools (controls included) with their default settings."""
    from eis.errors import unknown
    from eis.runner.plugins import load_builtins
    from eis.tools.base import FAMILIES, TOOLS, list_tools

    if family is not None and family not in FAMILIES:
        raise unknown("family", family, FAMILIES)
    load_builtins()
    table = Table("tool", "family", "control", "default settings")
    for name in list_tools(family):
        cls = TOOLS.get(name)
        settings = ", ".join(f"{k}={v!r}" for k, v in cls().settings().items())
        table.add_row(name, cls.family, "yes" if cls.control else "", settings)
    console.print(table)


@app.command("tracks")
@user_errors
def tracks() -> None:
    """List the registered tracks and the question each asks."""
    from eis.runner import DEFAULT_TRACKS
    from eis.runner.plugins import load_builtins
    from eis.tracks.base import TRACKS

    load_builtins()
    table = Table("track", "family", "headline", "default", "question")
    for name in TRACKS.names():
        track = TRACKS.get(name)
        table.add_row(
            name, track.family, track.headline, "yes" if name in DEFAULT_TRACKS else "", track.summary
        )
    console.print(table)
