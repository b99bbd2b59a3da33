"""``eis demo``: the README's main job in one command — build the zoo, run the tracks, write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, safe, user_errors
from eis.cli.zoo import DEVICE_HELP, WORKERS_HELP, build_with_progress
from eis.workers import default_workers


@app.command("demo")
@user_errors
def demo(
    suite: str = typer.Option("smoke", help="The suite to build and benchmark."),
    out: Path = typer.Option(Path("out"), help="Folder for the HTML report."),
    workers: int = typer.Option(None, "--workers", min=0, help=WORKERS_HELP, show_default=False),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    store: Path = typer.Option(None, "--store", help="Results store (default: $EIS_STORE or EIS_HOME)."),
) -> None:
    """Build the default zoo, run the default tracks on it and write the report."""
    from eis.cli.bench import print_summary
    from eis.report import build_report_data, print_report, write_html
    from eis.runner import DEFAULT_TRACKS, run_benchmark

    console.rule(f"[bold]1/3 zoo: building suite {safe(repr(suite))} (cached cases are reused)")
    workers = default_workers() if workers is None else workers
    cases = build_with_progress(suite, workers=workers, device=device)
    console.rule(f"[bold]2/3 bench: tracks {', '.join(DEFAULT_TRACKS)} on {len(cases)} cases")
    summary = run_benchmark(cases, workers=workers, store=store, progress=True, console=console)
    print_summary(summary)
    console.rule("[bold]3/3 report")
    data = build_report_data(store)
    print_report(data, console)
    path = write_html(data, out)
    console.print(f"[green]report written to {safe(path.resolve())}[/]", highlight=False)
