"""Seconds to build a suite cold: one case at a time vs worker processes, quiet vs under a competing load.

    .venv/bin/python benchmarks/bench_zoo.py smoke detect [--workers 2] [--no-load]

Each build goes into its own fresh temporary EIS_HOME so that every case trains (the zoo never trains a
spec twice). Both modes hold torch to one thread per process (the zoo build always does). The competing
load is one busy process spinning a 1-thread matrix multiply, as another user's job would. Prints one line
per build and the ratios measured in this run: one-at-a-time / parallel, quiet and loaded, and loaded /
quiet for each mode. The parallel build's weights are checked to be bit-identical to the serial ones.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time


def _busy(stop: multiprocessing.synchronize.Event) -> None:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def build_seconds(suite: str, workers: int) -> tuple[float, dict[str, bytes]]:
    import eis.zoo

    os.environ["EIS_HOME"] = tempfile.mkdtemp(prefix=f"eis-bench-zoo-{suite}-")
    t0 = time.perf_counter()
    cases = eis.zoo.build_suite(suite, workers=workers, device="cpu")
    seconds = time.perf_counter() - t0
    return seconds, {c.name: (c.root / "model.safetensors").read_bytes() for c in cases}


def main() -> None:
    from eis.workers import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", default=["smoke"])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--no-load", action="store_true", help="skip the builds under a competing load")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    for suite in args.suites:
        from eis.zoo.datasets import get_dataset
        from eis.zoo.suites import load_suite

        specs = load_suite(suite)
        for name in {s.dataset for s in specs}:
            get_dataset(name)  # data generation is not part of the build time compared here
        times: dict[tuple[str, int], float] = {}
        for load in ("quiet",) if args.no_load else ("quiet", "loaded"):
            stop = ctx.Event()
            busy = ctx.Process(target=_busy, args=(stop,), daemon=True) if load == "loaded" else None
            if busy is not None:
                busy.start()
            try:
                weights = {}
                for workers in (0, args.workers):
                    seconds, weights[workers] = build_seconds(suite, workers)
                    times[load, workers] = seconds
                    mode = "one at a time" if workers == 0 else f"{workers} workers"
                    print(f"{suite} ({len(specs)} cases), {load}, {mode}: {seconds:.1f} s", flush=True)
                same = weights[0] == weights[args.workers]
                print(f"  parallel weights bit-identical to one-at-a-time: {same}", flush=True)
            finally:
                if busy is not None:
                    stop.set()
                    busy.join(5)
        for load in sorted({k[0] for k in times}):
            ratio = times[load, 0] / times[load, args.workers]
            print(f"{suite}: {load}: one at a time / {args.workers} workers = {ratio:.2f}x")
        if ("loaded", 0) in times:
            for workers in (0, args.workers):
                mode = "one at a time" if workers == 0 else f"{workers} workers"
                ratio = times["loaded", workers] / times["quiet", workers]
                print(f"{suite}: {mode}: loaded / quiet = {ratio:.2f}x")


if __name__ == "__main__":
    main()
