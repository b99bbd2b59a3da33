"""Dispatch cells to a backend (the local pool of :mod:`eis.runner.execute` or Ray's tasks in
:mod:`eis.runner.ray_backend`) and store each record as it finishes; the one module that knows both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eis.results.store import Store
from eis.runner.cells import Cell
from eis.runner.execute import Executor, Record
from eis.workers import check_backend


def run_cells_to_store(
    cells: Sequence[Cell],
    store: Store,
    *,
    workers: int = 1,
    budget_s: float | None = None,
    rerun: bool = False,
    retry_failed: bool = False,
    on_record: Callable[[Cell, dict[str, Any]], None] = lambda c, r: None,
    on_start: Callable[[Cell], None] = lambda c: None,
    on_skip: Callable[[Cell], None] = lambda c: None,
    backend: str = "local",
    address: str | None = None,
) -> None:
    """Run ``cells`` and write each record to ``store`` as it finishes.

    backend: ``local`` (this process or a local pool, by ``workers``) or ``ray`` (Ray tasks on the cluster
    at ``address``, or on a local cluster with ``workers`` CPUs when there is none). Just before a cell
    is dispatched the store is checked again (unless ``rerun``): a cell finished in the meantime by
    another ``eis bench`` on the same store is skipped, not recomputed.
    """

    def skip(cell: Cell) -> bool:
        if not rerun and store.has(cell.key, failed=not retry_failed):
            on_skip(cell)
            return True
        return False

    def done(cell: Cell, record: Record) -> None:
        rec, gallery = record
        store.put(rec, gallery)
        on_record(cell, rec)

    if check_backend(backend) == "ray":
        from eis.runner.ray_backend import RayExecutor

        executor: Any = RayExecutor(workers=workers, budget_s=budget_s, address=address)
    else:
        executor = Executor(workers=workers, budget_s=budget_s)
    executor.run(cells, done, skip=skip, on_start=on_start)
