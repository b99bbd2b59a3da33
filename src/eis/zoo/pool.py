"""Building many cases at once: in this process or in worker processes, one torch thread each.

Every case trains with one intra-op thread wherever it runs, so a parallel build gives bit-identical
weights to a one-at-a-time build (tested), and N small models train side by side instead of two threads
spinning against each other. Workers start from a forkserver (spawn where there is none), so datasets and
architectures registered at run time must come from an importable module: the workers import the module
that registered each one (a script's own registrations count, as multiprocessing re-imports the script).
With ``backend="ray"`` each case is a Ray task and its artifact comes back to this process as bytes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue as queue_mod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eis.errors import EisError
from eis.workers import (
    adopt_environment,
    check_backend,
    eis_environment,
    exit_with,
    one_thread,
    process_context,
    ray_gpus_per_task,
    ray_session,
)
from eis.zoo import artifact, implant
from eis.zoo.build import BarError, BarMiss, build_case, cached, open_case
from eis.zoo.case import Case
from eis.zoo.features.spec import source_models
from eis.zoo.kinds import Spec, spec_kind
from eis.zoo.spec import resolve_device

Progress = Callable[[Spec, float, bool], None]

_QUEUE: Any = None  # the worker's end of the progress queue (set by _init)


def build_specs(
    specs: Sequence[Spec],
    *,
    workers: int = 0,
    force: bool = False,
    on_progress: Progress | None = None,
    device: str = "auto",
    backend: str = "local",
    address: str | None = None,
) -> list[Case]:
    """Build every spec on ``device`` (cache hits cost nothing); return the cases in the order of ``specs``.

    workers: 0 = one at a time in this process; N >= 1 = up to N worker processes (with ``backend="ray"``:
    the CPUs of a local Ray cluster, unless ``address`` names an existing one). ``on_progress(spec,
    fraction, cached)`` is called in this process as training goes (Ray tasks report completion only), and
    with fraction 1.0 once per case when it is cached, built, or has missed its bars.
    Every case is attempted; the ones that miss their bars are reported together in one BarError at the
    end (which carries the cases that were built), and nothing is written for them.
    """
    if base_list := implant.bases(specs):  # fine-tuned cases share cached bases: build those first
        try:
            build_specs(
                base_list, workers=workers, on_progress=on_progress, device=device, backend=backend,
                address=address,
            )  # fmt: skip
        except BarError as exc:
            raise EisError(f"a base model for fine-tuned cases missed its bars: {exc}") from None
    if models := source_models(specs):  # feature cases over models read them cached: build those first,
        try:  # on the CPU: a feature case names its image model's CPU-trained id
            build_specs(
                models, workers=workers, on_progress=on_progress, device="cpu", backend=backend,
                address=address,
            )  # fmt: skip
        except BarError as exc:
            raise EisError(f"a model read by feature cases missed its bars: {exc}") from None
    if check_backend(backend) == "ray":
        with ray_session(address, workers or None) as ray:
            gpus = ray.cluster_resources().get("GPU", 0) > 0
            specs = _on_device(specs, resolve_device(device, cuda=gpus))
            todo, built = _cached(specs, force, on_progress)
            misses = _build_on_ray(ray, [specs[i] for i in todo], todo, built, force, on_progress)
    else:
        specs = _on_device(specs, resolve_device(device))
        todo, built = _cached(specs, force, on_progress)
        args = ([specs[i] for i in todo], todo, built, force, on_progress or (lambda s, f, c: None))
        misses = _build_here(*args) if workers <= 0 or len(todo) <= 1 else _build_in_workers(*args, workers)
    if misses:
        raise BarError(misses, built=[built[i] for i in sorted(built)])
    return [built[i] for i in range(len(specs))]


def _on_device(specs: Sequence[Spec], device: str) -> list[Spec]:
    """The specs set to train on ``device`` where their kind's specs carry one (image cases); the others
    (compiled circuit cases, rule cases trained on the CPU) unchanged."""
    return [spec_kind(s).on_device(s, device) for s in specs]


def _cached(
    specs: Sequence[Spec], force: bool, on_progress: Progress | None
) -> tuple[list[int], dict[int, Case]]:
    """The indices of the specs still to build, and the cases already in the cache."""
    built: dict[int, Case] = {}
    todo: list[int] = []
    for i, spec in enumerate(specs):
        hit = None if force else cached(spec)
        if hit is None:
            todo.append(i)
        else:
            built[i] = hit
            if on_progress:
                on_progress(spec, 1.0, True)
    return todo, built


def _build_here(
    specs: Sequence[Spec], index: Sequence[int], built: dict[int, Case], force: bool, report: Progress
) -> list[BarMiss]:
    import torch

    misses: list[BarMiss] = []
    threads = one_thread()
    try:
        for i, spec in zip(index, specs, strict=True):
            try:  # completion is reported once, when the artifact is written (as from the workers)
                built[i], _ = build_case(
                    spec, force=force, progress=lambda f, s=spec: report(s, f, False) if f < 1.0 else None
                )
                report(spec, 1.0, False)
            except BarError as exc:
                misses.extend(exc.misses)
                report(spec, 1.0, False)
    finally:
        torch.set_num_threads(threads)
    return misses


def _build_in_workers(
    specs: Sequence[Spec],
    index: Sequence[int],
    built: dict[int, Case],
    force: bool,
    report: Progress,
    workers: int,
) -> list[BarMiss]:
    ctx = process_context(["eis.zoo.pool"])
    progress = ctx.Queue()
    modules = _registering_modules(specs)
    misses: list[BarMiss] = []
    pool = cf.ProcessPoolExecutor(
        min(workers, len(specs)),
        mp_context=ctx,
        initializer=_init,
        initargs=(progress, modules, dict(os.environ), os.getpid()),
    )
    finished = False
    try:
        futures = {pool.submit(_build_one, k, spec, force): k for k, spec in enumerate(specs)}
        pending = set(futures)
        finished_specs: set[int] = set()
        while pending:
            done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            _drain(progress, specs, report, finished_specs)
            for fut in done:
                k = futures[fut]
                finished_specs.add(k)
                root, case_misses = fut.result()
                if root is None:
                    misses.extend(case_misses)
                else:
                    built[index[k]] = open_case(Path(root))
                report(specs[k], 1.0, False)
        _drain(progress, specs, report, finished_specs)
        finished = True
    except cf.process.BrokenProcessPool:
        raise EisError("a zoo build worker process died (out of memory?); rerun with --workers 0") from None
    finally:
        if not finished:  # an error or Ctrl-C: stop the workers now (cases already written stay cached)
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)
        progress.close()
    return misses


def _drain(progress: Any, specs: Sequence[Spec], report: Progress, finished: set[int]) -> None:
    """Pass the workers' epoch messages on; completion is reported once the artifact is back in this
    process, and a message that arrives after it (the queue lags behind the result) is dropped."""
    while True:
        try:
            k, fraction = progress.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            return
        if fraction < 1.0 and k not in finished:
            report(specs[k], fraction, False)


def _registering_modules(specs: Sequence[Spec]) -> list[str]:
    """Modules outside eis that define the specs' classes (a kind registered outside eis) or registered
    the names they need, such as an image spec's dataset and architecture (workers import them)."""
    mods = set()
    for spec in specs:
        mods.add(type(spec).__module__)
        for registry, name, _ in spec_kind(spec).needs(spec):
            if name in registry:
                mods.add(getattr(registry.get(name), "__module__", "") or "")
    return sorted(m for m in mods if m and not m.startswith("eis.") and m not in ("__main__", "__mp_main__"))


def _init(progress: Any, modules: Sequence[str], env: dict[str, str], parent: int) -> None:
    """Worker start-up: exit when the parent does, the parent's environment, one torch thread, the
    progress queue, the modules that register names, and the plugins (entry points and ``$EIS_PLUGINS``)."""
    import importlib

    from eis.plugins import load_plugins

    global _QUEUE
    exit_with(parent)
    adopt_environment(env)
    one_thread()
    _QUEUE = progress
    for m in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(m)
    load_plugins()


def _build_one(k: int, spec: Spec, force: bool) -> tuple[str | None, list[BarMiss]]:
    """Worker: build one case; returns its folder, or None and the bars it missed."""
    for registry, name, what in spec_kind(spec).needs(spec):
        if name not in registry:
            raise EisError(
                f"{what} {name!r} is not registered in the zoo build's worker processes; register it in an "
                "importable module, or build with workers=0 (--workers 0)"
            )

    def progress(fraction: float) -> None:
        with contextlib.suppress(Exception):
            _QUEUE.put((k, fraction))

    try:
        case, _ = build_case(spec, force=force, progress=progress)
    except BarError as exc:  # returned, not raised: BarError does not survive pickling
        return None, exc.misses
    return str(case.root), []


def _build_on_ray(
    ray: Any,
    specs: Sequence[Spec],
    index: Sequence[int],
    built: dict[int, Case],
    force: bool,
    on_progress: Progress | None,
) -> list[BarMiss]:
    """Each case as a Ray task (one CPU, and a GPU share when it trains on CUDA); the artifact comes back
    as bytes and is written under this process's EIS_HOME, so the cluster needs no shared file system."""
    task = ray.remote(_build_remote)
    gpu_share = ray_gpus_per_task(ray, None)
    env = eis_environment()
    refs = {
        task.options(
            num_cpus=1, num_gpus=gpu_share if spec_kind(spec).device(spec) == "cuda" else 0, max_retries=1
        ).remote(spec, force, env): k
        for k, spec in enumerate(specs)
    }
    misses: list[BarMiss] = []
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        k = refs[ready[0]]
        case_id, files, case_misses = ray.get(ready[0])
        if files is None:
            misses.extend(case_misses)
        else:
            built[index[k]] = open_case(artifact.unpack(case_id, files))
        if on_progress:
            on_progress(specs[k], 1.0, False)
    return misses


def _build_remote(
    spec: Spec, force: bool, env: dict[str, str]
) -> tuple[str, dict[str, bytes] | None, list[BarMiss]]:
    """A Ray task: build one case where it runs; return its packed artifact, or the bars it missed."""
    from eis.plugins import load_plugins

    adopt_environment(env, prefix="EIS_")
    one_thread()
    load_plugins()
    try:
        case, _ = build_case(spec, force=force)
    except BarError as exc:
        return spec.case_id, None, exc.misses
    return case.id, artifact.pack(case.root), []
