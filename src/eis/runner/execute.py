"""Running cells: in process or in a pool of worker processes, with a per-cell time budget.

Time budget. With ``workers >= 1`` every cell runs in a worker process (``forkserver`` context where the OS
has it, else ``spawn``; never plain fork; one torch thread each) and the parent is the watchdog: a worker
whose cell passes its deadline is killed (SIGTERM, then SIGKILL), the cell is recorded as failed ("timed
out") and a fresh worker takes its place. This works even when the tool is stuck inside one long C++ call,
which no Python-level mechanism can interrupt. A worker's start-up does not count against the budget (the
clock starts when the cell is handed over). A worker that dies (segfault, out of memory) gets its cell
recorded as failed the same way. With ``workers == 0`` cells run in the calling process (handy for
debugging; torch is held to one thread there too, so that results are identical whatever the worker count);
the budget is then enforced with ``SIGALRM`` (POSIX main thread only), which interrupts Python code but
cannot stop a long C++ call until it returns.

Peak memory. Per cell we reset the kernel's peak-RSS counter (``/proc/self/clear_refs`` <- 5, Linux) and
read ``VmHWM`` afterwards: the process's peak resident memory during the cell, in MiB, everything
included (torch's allocator, which tracemalloc cannot see). ``rss_start_mb`` is the resident memory when
the cell started, so ``peak_mem_mb - rss_start_mb`` is roughly what the cell added. Where clear_refs is
unavailable we fall back to ``ru_maxrss`` (the process's lifetime peak: an upper bound). On CUDA,
``peak_gpu_mb`` is ``torch.cuda.max_memory_allocated`` over the cell.

Writes. Only the parent writes to the store, one short transaction per finished cell, so a Ctrl-C or a
SIGKILL loses at most the cells in flight.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import math
import multiprocessing.connection as mpc
import os
import platform
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from eis.errors import EisError, ToolRefusal
from eis.results.store import FAILED, NOT_APPLICABLE, OK, encode_png, to_jsonable
from eis.runner.cells import Cell
from eis.workers import adopt_environment, exit_with, one_thread, process_context

MAX_ERROR_CHARS = 2000


class CellTimeout(Exception):
    """Raised in process by the SIGALRM watchdog when a cell passes its budget."""


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("eis", "torch", "captum", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = ""
    return out


_VERSIONS: dict[str, str] | None = None


def _versions() -> dict[str, str]:
    global _VERSIONS
    if _VERSIONS is None:
        _VERSIONS = versions()
    return _VERSIONS


# -- memory --------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class _MemProbe:
    """Peak resident memory of this process over one cell (see the module docstring)."""

    def start(self) -> None:
        self.reset = False
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        self.rss_start = _status_mb("VmRSS")
        self.cuda = False
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
            self.cuda = True

    def stop(self) -> tuple[float | None, float | None, float | None]:
        peak = _status_mb("VmHWM") if self.reset else None
        if peak is None:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0
        gpu = None
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        return peak, self.rss_start, gpu


@contextlib.contextmanager
def _alarm(budget_s: float | None) -> Iterator[None]:
    """Raise CellTimeout in this thread after ``budget_s`` seconds (POSIX main thread only, else no-op)."""
    usable = (
        budget_s is not None
        and budget_s > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CellTimeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(budget_s))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- one cell ------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    """Global RNGs too, for tools that use them: the result depends on the cell, not on what ran before."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _check_result(result: Any) -> None:
    from eis.tracks.base import CellResult

    if not isinstance(result, CellResult):
        raise TypeError(f"track returned {type(result).__name__}, not a CellResult")
    for name, value in result.scores.items():
        if not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
            raise ValueError(f"score {name!r} is not a finite number: {value!r}")


def _base_record(cell: Cell) -> dict[str, Any]:
    case = cell.case
    torch = sys.modules.get("torch")
    return {
        "key": cell.key,
        "case_id": str(case.id),
        "case_name": str(getattr(case, "name", case.id)),
        "dataset": str(getattr(case, "dataset", "")),
        "arch": str(getattr(case, "arch", "")),
        "flaw": "",
        "tool": cell.tool,
        "family": cell.family,
        "control": cell.control,
        "settings": cell.settings,
        "track": cell.track,
        "track_version": cell.track_version,
        "seed": cell.seed,
        "versions": _versions(),
        "device": "cuda" if torch is not None and torch.cuda.is_available() else "cpu",
        "host": platform.node(),
        "scores": {},
        "items": {},
        "extras": _track_extras(cell),
    }


def _track_extras(cell: Cell) -> dict[str, Any]:
    """What every record of ``cell`` carries in its extras: the track settings other than the defaults
    (under ``track_settings``; nothing where the track ran with its defaults)."""
    return {"track_settings": cell.track_settings} if cell.track_settings_json != "{}" else {}


def failed_record(cell: Cell, error: str, runtime_s: float | None = None) -> dict[str, Any]:
    """A record for a cell that failed outside the track (timeout, dead worker)."""
    rec = _base_record(cell)
    rec.update(status=FAILED, error=error[:MAX_ERROR_CHARS], runtime_s=runtime_s, finished_at=time.time())
    return rec


def refusal_reason(exc: ToolRefusal) -> str:
    """A refusal's one-line reason: the first non-empty line of its message (else its class name)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:MAX_ERROR_CHARS]


def run_cell(cell: Cell, *, budget_s: float | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run one cell here and now; never raises for a tool's or track's failure (only KeyboardInterrupt).

    Returns the store record and the gallery as PNG bytes. A :class:`ToolRefusal` makes the cell "not
    applicable" (its one-line reason in ``error``, no traceback); any other exception, a non-finite score
    or a timeout makes it "failed". ``budget_s`` is enforced with SIGALRM where possible (see the module
    docstring); worker processes leave it to the parent.
    """
    from eis.tools.base import TOOLS
    from eis.tracks.base import TRACKS

    rec = _base_record(cell)
    gallery: dict[str, bytes] = {}
    _seed_everything(cell.seed)
    probe = _MemProbe()
    probe.start()
    t0 = time.perf_counter()
    try:
        with _alarm(budget_s):
            tool = copy.deepcopy(cell.tool_obj) if cell.tool_obj is not None else None
            if tool is None:
                tool = TOOLS.get(cell.tool)(**cell.settings)
            extra = {"partners": cell.partners} if cell.partners else {}
            track = TRACKS.get(cell.track)(**cell.track_settings)
            result = track.run(cell.case, tool, seed=cell.seed, **extra)
        _check_result(result)
        gallery = {str(k): encode_png(v) for k, v in result.gallery.items()}
        rec.update(
            status=OK,
            error="",
            flaw=str(result.flaw),
            scores={k: float(v) for k, v in result.scores.items()},
            items=to_jsonable(result.items),
            extras={**to_jsonable(result.extras), **_track_extras(cell)},
        )
    except CellTimeout:
        rec.update(status=FAILED, error=f"timed out: the cell ran past its budget of {budget_s:g} s")
    except ToolRefusal as exc:  # the tool declines this case: not applicable, not a failure
        rec.update(status=NOT_APPLICABLE, error=refusal_reason(exc))
    except Exception as exc:  # a tool or track failure is a result, not a crash
        msg = f"{type(exc).__name__}: {exc}"
        rec.update(
            status=FAILED,
            error=msg[:MAX_ERROR_CHARS],
            extras={"traceback": traceback.format_exc(), **_track_extras(cell)},
        )
    rec["runtime_s"] = time.perf_counter() - t0
    rec["peak_mem_mb"], rec["rss_start_mb"], rec["peak_gpu_mb"] = probe.stop()
    rec["finished_at"] = time.time()
    if rec["status"] != OK:
        gallery = {}
    return rec, gallery


# -- workers -------------------------------------------------------------------------------------------
def _worker_main(conn: mpc.Connection, modules: Sequence[str], env: dict[str, str], parent: int) -> None:
    """Worker process: import what registers the tools and tracks, then run cells until told to stop (or
    until the parent is gone, even mid-cell)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    exit_with(parent)
    adopt_environment(env)
    one_thread()
    setup_error = ""
    try:
        from eis.runner.plugins import load_builtins

        load_builtins()
        for m in modules:
            importlib.import_module(m)
    except Exception as exc:
        setup_error = f"worker could not import the tool/track modules: {type(exc).__name__}: {exc}"
    try:
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg is None:
                return
            cell = msg
            if setup_error:
                conn.send(("done", (failed_record(cell, setup_error), {})))
            else:
                conn.send(("done", run_cell(cell)))
    except (EOFError, OSError, BrokenPipeError):
        return  # the parent went away: stop quietly


class _Worker:
    def __init__(self, ctx: Any, modules: Sequence[str]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child, list(modules), dict(os.environ), os.getpid()), daemon=True
        )
        self.proc.start()
        child.close()
        self.ready = False
        self.cell: Cell | None = None
        self.started = 0.0

    def send(self, cell: Cell) -> None:
        self.cell, self.started = cell, time.monotonic()
        try:
            self.conn.send(cell)
        except Exception as exc:
            if isinstance(exc, (BrokenPipeError, EOFError)):
                raise
            raise EisError(
                f"could not send case {cell.case.id!r} to a worker process ({type(exc).__name__}: {exc}); "
                "run in process with --workers 0"
            ) from None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc.join(5.0)
        with contextlib.suppress(OSError):
            self.conn.close()


def _modules_for(cells: Sequence[Cell]) -> list[str]:
    """Modules defining the cells' tool and track classes: a spawned worker imports them to register them."""
    from eis.tools.base import TOOLS
    from eis.tracks.base import TRACKS

    mods: set[str] = set()
    for c in cells:
        mods.add(type(c.tool_obj).__module__ if c.tool_obj is not None else TOOLS.get(c.tool).__module__)
        mods.add(TRACKS.get(c.track).__module__)
    return sorted(m for m in mods if m not in ("__main__", "__mp_main__"))


Record = tuple[dict[str, Any], dict[str, bytes]]


def worker_context(method: str | None = None) -> Any:
    """The workers' process context; the forkserver preloads torch and every registered tool and track."""
    return process_context(["eis.runner._preload", "eis.runner.execute"], method)


@dataclasses.dataclass
class Executor:
    """Runs cells and hands each finished record to ``on_done`` (which writes it to the store)."""

    workers: int = 1
    budget_s: float | None = None
    start_method: str | None = None  # default: forkserver where available (fast restarts), else spawn

    def run(
        self,
        cells: Sequence[Cell],
        on_done: Callable[[Cell, Record], None],
        skip: Callable[[Cell], bool] = lambda c: False,
        on_start: Callable[[Cell], None] = lambda c: None,
    ) -> None:
        if self.workers <= 0:
            import torch

            threads = one_thread()  # as in the workers: same float reductions, same results
            try:
                for cell in cells:
                    if skip(cell):
                        continue
                    on_start(cell)
                    on_done(cell, run_cell(cell, budget_s=self.budget_s))
            finally:
                torch.set_num_threads(threads)
            return
        self._run_pool(cells, on_done, skip, on_start)

    def _run_pool(
        self,
        cells: Sequence[Cell],
        on_done: Callable[[Cell, Record], None],
        skip: Callable[[Cell], bool],
        on_start: Callable[[Cell], None],
    ) -> None:
        if not cells:
            return
        ctx = worker_context(self.start_method)
        modules = _modules_for(cells)
        pending = deque(cells)
        pool = [_Worker(ctx, modules) for _ in range(min(self.workers, len(cells)))]
        try:
            while pending or any(w.cell is not None for w in pool):
                for w in pool:
                    while w.ready and w.cell is None and pending:
                        cell = pending.popleft()
                        if skip(cell):
                            continue
                        on_start(cell)
                        w.send(cell)
                busy = [w for w in pool if w.cell is not None]
                if not busy and not pending:
                    break
                timeout = 1.0
                if self.budget_s:
                    now = time.monotonic()
                    timeout = min([timeout] + [max(0.0, w.started + self.budget_s - now) for w in busy])
                for conn in mpc.wait([w.conn for w in pool], timeout=timeout):
                    w = next(w for w in pool if w.conn is conn)
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):
                        self._replace(pool, w, ctx, modules, on_done, "the worker process died")
                        continue
                    if kind == "ready":
                        w.ready = True
                    else:
                        cell, w.cell = w.cell, None
                        on_done(cell, payload)
                if self.budget_s:
                    now = time.monotonic()
                    for w in list(pool):
                        if w.cell is not None and now - w.started > self.budget_s:
                            msg = f"timed out: the cell ran past its budget of {self.budget_s:g} s"
                            self._replace(pool, w, ctx, modules, on_done, msg)
        finally:
            for w in pool:
                if w.cell is None and w.proc.is_alive():
                    with contextlib.suppress(Exception):
                        w.conn.send(None)
            for w in pool:
                w.proc.join(0.5 if w.cell is None else 0.0)
                w.kill()

    def _replace(
        self, pool: list[_Worker], w: _Worker, ctx: Any, modules: Sequence[str], on_done, why
    ) -> None:
        """Kill worker ``w`` (recording its cell as failed with ``why``) and start a fresh one."""
        cell, runtime = w.cell, time.monotonic() - w.started
        w.kill()
        if cell is not None:
            code = w.proc.exitcode
            if why.startswith("the worker"):
                why = f"{why} (exit code {code}) while running the cell"
            on_done(cell, (failed_record(cell, why, runtime_s=runtime), {}))
        elif not w.ready:
            raise EisError(f"a worker process failed to start (exit code {w.proc.exitcode})")
        pool[pool.index(w)] = _Worker(ctx, modules)
