"""Shared one-off work before the cells: each distinct :class:`eis.cache.Prep` of a run, once, side by side.

Some cells need a module trained once and cached: the synthesis judge of a dataset, the feature-level
adversary's generator, a learned detector's fit on its training population. Left to the cells, the first
cell of each kind trains it, and when two workers start such cells at once both train the same module (the
cache's lock now makes the second wait instead, idle). So the runner asks each track what its cells will
need (``Track.prepare``), and before the cells runs every distinct prep once on the same number of worker
processes, different modules side by side. A prep that fails or runs past the time limit is reported
and skipped: the cells that need it do the work themselves, and record a failure there if it fails again.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from eis.cache import Prep
from eis.runner.cells import Cell
from eis.runner.execute import worker_context
from eis.workers import adopt_environment, exit_with, one_thread


def collect_preps(cells: Sequence[Cell]) -> list[Prep]:
    """The distinct preps (by key, first seen first) that the tracks of ``cells`` name for them."""
    from eis.tools.base import TOOLS
    from eis.tracks.base import TRACKS

    tracks: dict[tuple[str, str], Any] = {}
    preps: dict[str, Prep] = {}
    for cell in cells:
        try:
            track = tracks.get((cell.track, cell.track_settings_json))
            if track is None:
                track = tracks[cell.track, cell.track_settings_json] = TRACKS.get(cell.track)(
                    **cell.track_settings
                )
            tool = cell.tool_obj if cell.tool_obj is not None else TOOLS.get(cell.tool)(**cell.settings)
            for prep in track.prepare(cell.case, tool, cell.partners):
                preps.setdefault(prep.key, prep)
        except Exception:  # the cell itself will meet the problem and record it
            continue
    return list(preps.values())


def _start_worker(env: dict[str, str], parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    exit_with(parent)
    adopt_environment(env)
    one_thread()


def _do(prep: Prep) -> float:
    t0 = time.perf_counter()
    prep.fn()
    return time.perf_counter() - t0


def run_preps(
    preps: Sequence[Prep],
    *,
    workers: int = 1,
    budget_s: float | None = None,
    on_line: Callable[[str], None] = lambda line: None,
) -> dict[str, str]:
    """Run ``preps`` (in this process with ``workers <= 0``, else on up to ``workers`` processes, one torch
    thread each, as cells run) and return the failures: key -> one-line reason. ``budget_s`` limits each
    prep as it limits a cell: the whole batch gets ``budget_s`` x its number of rounds. ``on_line`` hears a
    line per prep done or failed."""
    failures: dict[str, str] = {}

    def fail(key: str, why: str) -> None:
        failures[key] = why
        on_line(f"could not prepare {key} ({why}); its cells will try")

    def settle(key: str, seconds: Callable[[], float]) -> None:
        try:
            took = seconds()
        except Exception as exc:
            fail(key, f"{type(exc).__name__}: {exc}")
        else:
            on_line(f"prepared {key} in {took:.0f} s")

    if not preps:
        return failures
    if workers <= 0:
        import torch

        threads = one_thread()
        try:
            for prep in preps:
                settle(prep.key, functools.partial(_do, prep))
        finally:
            torch.set_num_threads(threads)
        return failures

    n = min(workers, len(preps))
    pool = worker_context().Pool(n, _start_worker, (dict(os.environ), os.getpid()))
    try:
        pending = {prep.key: pool.apply_async(_do, (prep,)) for prep in preps}
        deadline = None if budget_s is None else time.monotonic() + budget_s * math.ceil(len(preps) / n)
        while pending:
            for key, res in list(pending.items()):
                if not res.ready():
                    continue
                del pending[key]
                settle(key, res.get)
            if pending and deadline is not None and time.monotonic() > deadline:
                for key in pending:
                    fail(key, f"not done within the budget ({budget_s:g} s a prep)")
                break
            if pending:
                time.sleep(0.2)
    finally:
        pool.terminate()
        pool.join()
    return failures
