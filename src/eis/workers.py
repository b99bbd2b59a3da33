"""Worker processes shared by the zoo build and the benchmark runner: how many, and how they start.

Small models train and evaluate fastest with one torch thread per process and several processes: on a
busy 2-core machine two intra-op threads in one process were measured 2.5-6x slower than one. So every
worker (and an in-process run, for identical float reductions) holds torch to one thread.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from typing import Any

from eis.errors import EisError

BACKENDS = ("local", "ray")


def default_workers() -> int:
    """The default number of worker processes: one per CPU core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def process_context(preload: Sequence[str] = (), method: str | None = None) -> Any:
    """A fork-safe multiprocessing context: never plain fork (torch's threads and CUDA don't survive it).

    forkserver (POSIX) starts one clean server process that imports ``preload`` once; every worker,
    including the replacement of a killed one, is forked from it in milliseconds. spawn elsewhere.
    """
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver" and preload:
        ctx.set_forkserver_preload(list(preload))
    return ctx


def adopt_environment(env: dict[str, str], prefix: str = "") -> None:
    """Give a worker its parent's environment as it is now (``EIS_HOME``, ``EIS_PLUGINS``, ...).

    A forkserver's children inherit the environment the server started with, which may be stale: a
    process that changes ``EIS_HOME`` after its first pool would otherwise send later workers to the old
    home. Workers call this first with the parent's ``os.environ`` (or, with ``prefix``, only the
    variables starting with it: a Ray worker on another machine keeps its own ``PATH``).
    """
    for key in [k for k in os.environ if k.startswith(prefix) and k not in env]:
        del os.environ[key]
    os.environ.update(env)


def exit_with(pid: int, every_s: float = 1.0) -> None:
    """End this worker process soon after process ``pid`` (the one that started the pool) is gone.

    A pool's workers are children of the forkserver, not of the process that uses them: when that
    process is killed (SIGTERM, SIGKILL, a closed terminal), nothing tells them, and they would train on
    for nobody. A daemon thread polls ``pid`` and exits the worker, without cleanup, when it has gone.
    """
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, owned by someone else (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="eis-exit-with-parent", daemon=True).start()


def one_thread() -> int:
    """Hold torch to one intra-op thread; returns the previous count (to restore it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous


def check_backend(backend: str) -> str:
    """``backend`` if it is one eis runs on, else a one-line error naming the valid ones."""
    if backend not in BACKENDS:
        raise EisError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


def eis_environment() -> dict[str, str]:
    """The ``EIS_*`` variables of this process, which Ray tasks on other machines run with."""
    return {k: v for k, v in os.environ.items() if k.startswith("EIS_")}


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Yield the ``ray`` module connected to a cluster: the one at ``address`` (``auto``: the cluster this
    machine belongs to), else a local one with ``num_cpus`` CPUs started for the block and stopped after
    it. A session this process already has is reused and left running."""
    try:
        import ray
    except ImportError:
        raise EisError("the ray backend needs Ray: pip install 'eis[ray]'") from None
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": "ERROR",
            "log_to_driver": False,
        }
        try:
            if address:
                ray.init(address=address, runtime_env={"env_vars": eis_environment()}, **options)
            else:
                ray.init(num_cpus=num_cpus or default_workers(), **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
            raise EisError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_gpus_per_task(ray: Any, requested: float | None) -> float:
    """GPUs each Ray task asks for: ``requested``, else the cluster's GPUs shared over its CPUs (0 without
    GPUs), so that every CPU slot can run while the small models share the GPUs."""
    if requested is not None:
        return float(requested)
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    return 0.0 if gpus <= 0 else min(1.0, gpus / max(cpus, 1.0))
