"""Worker processes shared by the zoo build and the benchmark runner: how many, and how they start.

Small models train and evaluate fastest with one torch thread per process and several processes: on a
busy 2-core machine two intra-op threads in one process were measured 2.5-6x slower than one. So every
worker (and an in-process run, for identical float reductions) holds torch to one thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from typing import Any


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


def adopt_environment(env: dict[str, str]) -> None:
    """Give a worker its parent's environment as it is now (``EIS_HOME``, ``EIS_PLUGINS``, ...).

    A forkserver's children inherit the environment the server started with, which may be stale: a
    process that changes ``EIS_HOME`` after its first pool would otherwise send later workers to the old
    home. Workers call this first with ``dict(os.environ)`` from the parent.
    """
    os.environ.clear()
    os.environ.update(env)


def one_thread() -> int:
    """Hold torch to one intra-op thread; returns the previous count (to restore it)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous
