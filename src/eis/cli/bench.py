"""``eis bench SUITE``: run the benchmark cells of a suite into the results store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from eis.cli import app
from eis.cli.common import console, err_console, safe, user_errors
from eis.cli.zoo import ADDRESS_HELP, BACKEND_HELP, DEVICE_HELP, build_with_progress
from eis.workers import check_backend, default_workers

if TYPE_CHECKING:  # the runner and the zoo import pandas and torch: imported when `bench` runs
    from eis.runner import BenchSummary


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
@user_errors
def bench(
    suite: str = typer.Argument(..., help="Suite name (e.g. smoke) or a suite file."),
    tracks: str = typer.Option(
        None,
        "--tracks",
        help="Comma-separated tracks (default: the suite's \\[tracks] default list, else eis's default).",
    ),
    tools: str = typer.Option(
        None,
        "--tools",
        help="Comma-separated tools (default: all of each track's family; controls always run).",
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=0,
        show_default=False,
        help="Worker processes for the zoo build and the cells (default: one per core); 0: this process.",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    rerun: bool = typer.Option(False, "--rerun", help="Recompute cells already in the store."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Recompute only the stored failures (not the cells not applicable)."
    ),
    store: Path = typer.Option(None, "--store", help="Results store (default: $EIS_STORE or EIS_HOME)."),
    budget: float = typer.Option(600.0, "--budget", min=0, help="Per-cell time budget in seconds (0: none)."),
    skip_missed: bool = typer.Option(
        False,
        "--skip-missed",
        help="Bench the cases that met their bars and leave out (and list) the ones that missed them "
        "after their retries (default: stop).",
    ),
) -> None:
    """Run every (case x tool x track) cell of SUITE not yet in the store, and record it there.

    Without --tracks: the tracks in the suite file's \\[tracks] default list (else the default tracks).

    Its \\[tracks.<name>] tables set those tracks' settings (e.g. n_inputs = 100).
    """
    from eis.runner import resolve_suite, run_benchmark
    from eis.runner.cells import checked_track_settings, resolve_tools, resolve_tracks
    from eis.runner.plugins import load_builtins
    from eis.zoo.suites import suite_default_tracks, suite_track_settings

    load_builtins()
    track_names, tool_names = _split(tracks), _split(tools)
    zoo_suite = _zoo_suite(suite)
    if track_names is None and zoo_suite:
        track_names = suite_default_tracks(suite)
    settings = checked_track_settings(suite_track_settings(suite) if zoo_suite else {})
    # bad names and settings fail now, before the zoo is built
    resolve_tools(tool_names, resolve_tracks(track_names, settings))
    check_backend(backend)
    workers = default_workers() if workers is None else workers
    cases = resolve_suite(
        suite,
        lambda s: _built(s, skip_missed, workers=workers, device=device, backend=backend, address=address),
    )
    try:
        summary = run_benchmark(
            cases,
            tools=tool_names,
            tracks=track_names,
            workers=workers,
            rerun=rerun,
            store=store,
            budget_s=budget or None,
            retry_failed=retry_failed,
            progress=True,
            console=console,
            backend=backend,
            address=address,
            track_settings=settings,
        )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] finished cells are saved; run the same command again to finish the rest"
        )
        raise typer.Exit(code=130) from None
    print_summary(summary)


def _zoo_suite(suite: str) -> bool:
    """Whether ``suite`` is a zoo suite file (built in or a path), whose [tracks] table eis reads; a
    plugin's suite has none, and an unknown name is left for resolve_suite to report."""
    from eis.runner.plugins import SUITES
    from eis.zoo.suites import builtin_suites

    return suite not in SUITES and (suite.endswith(".toml") or suite in builtin_suites())


def _built(suite: str, skip_missed: bool, **build: Any) -> list[Any]:
    """The suite's cases, built where not cached. Cases that missed their bars after their retries are
    listed; with ``skip_missed`` the bench goes on without them, else it stops (exit 1, as `zoo build`)."""
    from eis.zoo.build import BarError

    try:
        return build_with_progress(suite, **build)
    except BarError as exc:
        for miss in exc.misses:
            what = "[yellow]left out[/], bar missed" if skip_missed else "[bold red]bar missed:[/]"
            err_console.print(f"{what} {safe(miss)}", highlight=False)
        if skip_missed:
            return exc.built
        err_console.print(f"pass --skip-missed to bench the {len(exc.built)} cases that met their bars")
        raise typer.Exit(code=1) from None


def print_summary(summary: BenchSummary, shown: int = 10) -> None:
    """The run's one-line summary, its first failures and its first cells not applicable (a tool refused
    the case: an answer, not an error); all are in the store and the report."""
    console.print(safe(summary.line()), highlight=False)
    for cells, label in ((summary.failures, "[red]failed[/]"), (summary.refusals, "[cyan]not applicable[/]")):
        for f in cells[:shown]:
            console.print(
                f"  {label} {safe(f['track'])} · {safe(f['tool'])} · {safe(f['case'])}: {safe(f['error'])}",
                highlight=False,
                soft_wrap=True,  # one line per cell whatever the terminal's width
            )
        if len(cells) > shown:
            console.print(f"  ... and {len(cells) - shown} more (see `eis report`)")
