"""Seconds to build a suite cold, and per-case training time (issue: zoo build budget).

    .venv/bin/python benchmarks/bench_zoo.py smoke standard

Builds each suite into its own fresh temporary EIS_HOME so that every case trains (suites share specs,
and the zoo never trains a spec twice); prints one line per case, the totals, and the ratio of the total
to the suite's budget.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

BUDGET_S = {"smoke": 60.0, "standard": 900.0}
CASE_BUDGET_S = 30.0


def main(suites: list[str]) -> None:
    import torch

    from eis.zoo import suite_cases
    from eis.zoo.build import BarError, build_case
    from eis.zoo.datasets import get_dataset

    print(f"torch threads: {torch.get_num_threads()}")
    for suite in suites:
        os.environ["EIS_HOME"] = tempfile.mkdtemp(prefix=f"eis-bench-zoo-{suite}-")
        specs = suite_cases(suite)
        t0 = time.perf_counter()
        for name in {s.dataset for s in specs}:
            get_dataset(name)
        data_s = time.perf_counter() - t0
        worst = 0.0
        for spec in specs:
            t = time.perf_counter()
            try:
                case, _ = build_case(spec)
                bars = ", ".join(f"{k}={v:.3f}" for k, v in case.truth().measured.items())
            except BarError as exc:
                bars = f"FAILED: {exc}"
            dt = time.perf_counter() - t
            worst = max(worst, dt)
            print(
                f"  {spec.name:32s} {dt:6.1f} s  {dt / CASE_BUDGET_S:5.2f}x of {CASE_BUDGET_S:.0f} s  {bars}",
                flush=True,
            )
        total = time.perf_counter() - t0
        budget = BUDGET_S.get(suite)
        ratio = f"{total / budget:.2f}x of the {budget:.0f} s budget" if budget else ""
        print(
            f"{suite}: {len(specs)} cases cold in {total:.1f} s (data generation {data_s:.1f} s); "
            f"slowest case {worst:.1f} s; {ratio}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["smoke"])
