"""``eis report``: the terminal leaderboard and the self-contained HTML report, from the results store."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, safe, user_errors


@app.command()
@user_errors
def report(
    out: Path = typer.Option(Path("eis-report"), "--out", help="Folder for index.html."),
    store: Path = typer.Option(None, "--store", help="Results store (default: $EIS_STORE or EIS_HOME)."),
    html: bool = typer.Option(True, "--html/--no-html", help="Write the HTML report too."),
) -> None:
    """Print the leaderboard of every track and write the HTML report."""
    from eis.report import build_report_data, print_report, write_html

    data = build_report_data(store)
    print_report(data, console)
    if html:
        path = write_html(data, out)
        console.print(f"report written to {safe(path.resolve())}", highlight=False)
