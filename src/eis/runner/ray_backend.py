"""Cells as Ray tasks (``eis bench --backend ray``): the same cells, records and store as the local pool.

Only this (driver) process writes the store, one transaction per finished cell, so killing the driver
loses at most the cells in flight and the same command resumes. Each task runs one cell with one torch
thread (``run_cell``, exactly as a local worker does), so the records equal the local backend's. Cells run
on long-lived worker actors (one CPU each), like the local pool's worker processes: a cell whose worker
dies (killed, out of memory) is recorded as failed and the run goes on with a fresh worker; a cell past
its budget has its worker killed and is recorded as timed out. The budget counts from the hand-over to
a worker that is already up.

Case artifacts travel with the tasks: a worker that does not find a case's folder (another machine,
another ``EIS_HOME``) writes the packed copy the driver put in Ray's object store under its own
``EIS_HOME`` first, so a cluster needs no shared file system. Tasks ask Ray for one CPU each and, where
the cluster has GPUs, a share of one (``gpus_per_task``).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from eis.errors import EisError
from eis.runner.cells import Cell
from eis.runner.execute import Record, _modules_for, failed_record, run_cell
from eis.workers import adopt_environment, eis_environment, one_thread, ray_gpus_per_task, ray_session


@dataclasses.dataclass
class RayExecutor:
    """Runs cells on a Ray cluster and hands each finished record to ``on_done``.

    address: an existing cluster (``auto``: the one this machine belongs to, or ``ray://host:port``);
    None starts a local cluster with ``workers`` CPUs for the run.
    """

    workers: int = 0
    budget_s: float | None = None
    address: str | None = None
    gpus_per_task: float | None = None

    def run(
        self,
        cells: Sequence[Cell],
        on_done: Callable[[Cell, Record], None],
        skip: Callable[[Cell], bool] = lambda c: False,
        on_start: Callable[[Cell], None] = lambda c: None,
    ) -> None:
        if not cells:
            return
        with ray_session(self.address, self.workers or None) as ray:
            options = {
                "num_cpus": 1,
                "num_gpus": ray_gpus_per_task(ray, self.gpus_per_task),
                "max_restarts": 0,
            }
            make = ray.remote(CellWorker).options(**options)
            env, modules = eis_environment(), _modules_for(cells)
            slots = min(len(cells), max(1, int(ray.cluster_resources().get("CPU", 1))))
            starting = {}  # ready() reference -> worker still starting up
            for _ in range(slots):
                w = make.remote(env, modules)
                starting[w.ready.remote()] = w
            idle: list[Any] = []
            running: dict[Any, tuple[Any, Cell, float]] = {}  # run() reference -> (worker, cell, started)
            packed: dict[str, Any] = {}
            pending = deque(cells)
            try:
                while pending or running:
                    while idle and pending:
                        cell = pending.popleft()
                        if skip(cell):
                            continue
                        on_start(cell)
                        w = idle.pop()
                        ship = [_packed_ref(ray, packed, c) for c in (cell.case, *cell.partners)]
                        running[w.run.remote(cell, *ship)] = (w, cell, time.monotonic())
                    if not running and not pending:
                        break
                    waiting = [*starting, *running]
                    ready, _ = ray.wait(waiting, num_returns=1, timeout=self._wait_s(running))
                    for ref in ready:
                        if ref in starting:
                            w = starting.pop(ref)
                            _started(ray, ref)
                            idle.append(w)
                            continue
                        w, cell, started = running.pop(ref)
                        record, died = _result(ray, ref, cell, time.monotonic() - started)
                        on_done(cell, record)
                        if died:
                            w = make.remote(env, modules)
                            starting[w.ready.remote()] = w
                        else:
                            idle.append(w)
                    for w in self._cancel_late(ray, running, on_done):
                        w = make.remote(env, modules)
                        starting[w.ready.remote()] = w
            finally:
                for w, _, _ in running.values():
                    ray.kill(w)

    def _wait_s(self, running: dict[Any, tuple[Any, Cell, float]]) -> float:
        if not self.budget_s:
            return 1.0
        now = time.monotonic()
        return max(0.0, min([1.0] + [t + self.budget_s - now for _, _, t in running.values()]))

    def _cancel_late(
        self,
        ray: Any,
        running: dict[Any, tuple[Any, Cell, float]],
        on_done: Callable[[Cell, Record], None],
    ) -> list[Any]:
        """Kill the workers whose cell passed its budget, record those cells as timed out; returns the
        killed workers (to be replaced)."""
        killed = []
        if not self.budget_s:
            return killed
        now = time.monotonic()
        for ref, (w, cell, started) in list(running.items()):
            if now - started > self.budget_s:
                ray.kill(w)
                del running[ref]
                killed.append(w)
                msg = f"timed out: the cell ran past its budget of {self.budget_s:g} s"
                on_done(cell, (failed_record(cell, msg, runtime_s=now - started), {}))
        return killed


class CellWorker:
    """A Ray actor that runs cells one at a time, set up as a local worker process is (one torch thread,
    the tool and track modules imported). Workers start before any cell is handed over, so a cell's budget
    never pays for a worker's start-up."""

    def __init__(self, env: dict[str, str], modules: Sequence[str]) -> None:
        import importlib

        from eis.runner.plugins import load_builtins

        adopt_environment(env, prefix="EIS_")
        one_thread()
        load_builtins()
        for m in modules:
            importlib.import_module(m)

    def ready(self) -> bool:
        return True

    def run(
        self, cell: Cell, case_files: dict[str, bytes] | None, *partner_files: dict[str, bytes] | None
    ) -> Record:
        """Run ``cell`` with its case's and partners' artifacts (packed, in that order) unpacked here."""
        partners = tuple(_local_case(c, f) for c, f in zip(cell.partners, partner_files, strict=True))
        cell = dataclasses.replace(cell, case=_local_case(cell.case, case_files), partners=partners)
        return run_cell(cell)


def _started(ray: Any, ref: Any) -> None:
    try:
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise EisError(f"a Ray worker failed to start: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _packed_ref(ray: Any, packed: dict[str, Any], case: Any) -> Any:
    """An object-store reference to ``case``'s packed artifact (None for cases that are not artifacts)."""
    from eis.zoo import artifact
    from eis.zoo.case import Case

    if not isinstance(case, Case):
        return None
    if case.id not in packed:
        packed[case.id] = ray.put(artifact.pack(case.root))
    return packed[case.id]


def _result(ray: Any, ref: Any, cell: Cell, runtime_s: float) -> tuple[Record, bool]:
    """The cell's record, and whether its worker died running it (then it is recorded as failed)."""
    try:
        return ray.get(ref), False
    except ray.exceptions.RayError as exc:
        msg = f"the Ray worker died while running the cell: {_first_line(exc)}"
        return (failed_record(cell, msg, runtime_s), {}), True


def _local_case(case: Any, files: dict[str, bytes] | None) -> Any:
    """``case`` on this machine: as it is where its folder exists, else unpacked under this EIS_HOME."""
    if files is None or case is None or case.root.is_dir():
        return case
    from eis.zoo import artifact
    from eis.zoo.build import open_case

    return open_case(artifact.unpack(case.id, files))
