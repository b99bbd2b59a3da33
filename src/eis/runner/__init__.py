"""The benchmark runner: cases x tools x tracks -> cells -> the results store.

``run_benchmark`` is the Python API that ``eis bench`` wraps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eis.results.store import FAILED, NOT_APPLICABLE, OK, Store, open_store
from eis.runner.cells import DEFAULT_TRACKS, Cell, cell_key, cell_seed, expand
from eis.runner.dispatch import run_cells_to_store
from eis.runner.execute import Executor, run_cell
from eis.runner.plugins import SUITES, load_builtins, load_plugins, register_suite, resolve_suite
from eis.runner.prepare import collect_preps, run_preps

__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_TRACKS",
    "SUITES",
    "BenchSummary",
    "Cell",
    "Executor",
    "cell_key",
    "cell_seed",
    "expand",
    "load_builtins",
    "load_plugins",
    "register_suite",
    "resolve_suite",
    "run_benchmark",
    "run_cell",
]

DEFAULT_BUDGET_S = 600.0


@dataclasses.dataclass
class BenchSummary:
    """What a run did: cells in all, run now, found in the store, and among those run now the failures and
    the cells not applicable (the tool refused the case)."""

    store_path: Path
    total: int = 0
    ran: int = 0
    cached: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    not_applicable: int = 0
    refusals: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        na = f", {self.not_applicable} not applicable" if self.not_applicable else ""
        return (
            f"{self.total} cells: {self.ran} run now ({self.failed} failed{na}), {self.cached} already in "
            f"{self.store_path}"
        )


def run_benchmark(
    cases: Sequence[Any],
    tools: Sequence[Any] | None = None,
    tracks: Sequence[str] | None = None,
    workers: int = 1,
    rerun: bool = False,
    store: str | Path | Store | None = None,
    budget_s: float | None = DEFAULT_BUDGET_S,
    *,
    retry_failed: bool = False,
    progress: bool = False,
    console: Any = None,
    backend: str = "local",
    address: str | None = None,
    track_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> BenchSummary:
    """Run every cell of ``cases`` x ``tools`` x ``tracks`` not yet in ``store`` and record it there.

    cases: Case objects (``eis.zoo.build_suite(...)``). tools: names or Tool instances (default: every
    tool of each track's family; the family's controls are always added). tracks: names (default: the
    registered ones among ``DEFAULT_TRACKS``). workers: 0 = in this process, N >= 1 = N worker processes
    (each cell then has a hard time budget). rerun: recompute cells already stored. retry_failed: recompute
    only the stored failures (not the cells not applicable: a refusal is an answer). budget_s: per-cell
    time limit in seconds (None = none). backend: ``local`` or ``ray`` (cells as Ray tasks on the cluster
    at ``address``, or on a local one with ``workers`` CPUs); the records are the same either way.
    track_settings: track name -> constructor keywords, e.g. ``{"localize": {"n_inputs": 100}}`` (a suite
    file's ``[tracks.*]`` tables: ``eis.zoo.suites.suite_track_settings``); cells run with settings other
    than a track's defaults are cells of their own, recorded with those settings in
    ``extras["track_settings"]``.

    Before the cells, the one-off modules they share (a dataset's synthesis judge, a detector's fit on its
    training population: ``Track.prepare``) are trained once each, side by side on the workers
    (:mod:`eis.runner.prepare`).
    """
    load_builtins()
    cells = expand(cases, tools, tracks, track_settings)
    st = open_store(store)
    summary = BenchSummary(store_path=st.path, total=len(cells))
    try:
        done = st.keys() - st.keys(status=FAILED) if retry_failed else st.keys()
        todo = cells if rerun else [c for c in cells if c.key not in done]
        summary.cached = len(cells) - len(todo)

        out = (console or _console()) if progress else None

        def say(line: str) -> None:
            if out is not None:
                out.print(line, markup=False, highlight=False)

        preps = collect_preps(todo)
        if preps:
            keys = ", ".join(p.key for p in preps)
            say(f"preparing {len(preps)} shared module(s) before the cells: {keys}")
            run_preps(preps, workers=workers, budget_s=budget_s, on_line=lambda line: say(f"  {line}"))

        bar = _progress_bar(console) if progress and todo else None
        task = bar.add_task("bench", total=len(todo), failed=0, current="") if bar is not None else None

        def on_record(cell: Cell, rec: dict[str, Any]) -> None:
            summary.ran += 1
            entry = {"track": cell.track, "tool": cell.tool, "case": rec["case_name"], "error": rec["error"]}
            if rec["status"] == NOT_APPLICABLE:
                summary.not_applicable += 1
                summary.refusals.append(entry)
            elif rec["status"] != OK:
                summary.failed += 1
                summary.failures.append(entry)
            if bar is not None:
                bar.update(task, advance=1, failed=summary.failed)

        def on_skip(cell: Cell) -> None:
            summary.cached += 1
            if bar is not None:
                bar.update(task, advance=1)

        def on_start(cell: Cell) -> None:
            if bar is not None:
                bar.update(task, current=cell.label())

        with bar if bar is not None else contextlib.nullcontext():
            run_cells_to_store(
                todo,
                st,
                workers=workers,
                budget_s=budget_s,
                rerun=rerun,
                retry_failed=retry_failed,
                on_record=on_record,
                on_skip=on_skip,
                on_start=on_start,
                backend=backend,
                address=address,
            )
            if bar is not None:
                bar.update(task, current="")
        return summary
    finally:
        if not isinstance(store, Store):
            st.close()


def _console() -> Any:
    from rich import get_console

    return get_console()


def _progress_bar(console: Any) -> Any:
    """The bench progress display: done / total, failures, elapsed time, ETA and the cell now running
    (rich bars on a terminal, periodic plain lines otherwise)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from eis.progress import progress_display

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim", markup=False),
    )
    return progress_display(console or _console(), *columns)
