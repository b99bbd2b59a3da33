"""``eis demo``: the README's main job in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, user_errors
from eis.cli.zoo import build_with_progress, list_cases


@app.command("demo")
@user_errors
def demo(
    suite: str = typer.Option("smoke", help="The suite to build and benchmark."),
    out: Path = typer.Option(Path("out"), help="Folder for the report."),
) -> None:
    """Build the default zoo, run the default tracks and write the report."""
    console.rule(f"[bold]1/1 building the {suite} zoo")
    build_with_progress(suite)
    list_cases()
    out.mkdir(parents=True, exist_ok=True)
