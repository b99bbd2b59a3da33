"""Seconds per model per repair method on a suite's trojaned cases (default: the standard zoo).

Times the detector (Neural Cleanse on the budget, once per model: the methods that need it share it) and
each method's ``repair`` call alone, on the same 5% budget the ``repair`` track gives, one torch thread.
Prints a table (cases x methods, seconds) and the per-method mean, plus the track's total per model.

    python benchmarks/bench_repair.py [--suite standard] [--methods anp,finetune] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

import eis.zoo
from eis.tools.base import list_tools, make_tool
from eis.tools.repair.base import NotApplicable
from eis.tracks.repair import RepairTrack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--methods", default=",".join(list_tools("repair")))
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    track = RepairTrack()
    methods = args.methods.split(",")
    cases = [c for c in eis.zoo.build_suite(args.suite) if track.applies_to(c) and c.truth().kind != "clean"]
    print(f"{len(cases)} trojaned cases of {args.suite!r}; seconds per model (repair call only; NC once)")
    print(f"{'case':28s} {'nc':>6s} " + " ".join(f"{m[:12]:>12s}" for m in methods))
    totals: dict[str, list[float]] = {m: [] for m in ["nc", *methods]}
    for case in cases:
        model = case.model(args.device)
        xb, yb, _ = track.budget_data(case, seed=0)
        xb, yb = xb.to(next(model.parameters()).device), yb.to(next(model.parameters()).device)
        t0 = time.perf_counter()
        det = make_tool("nc_unlearning").detector_tool().inspect(model, xb, yb, case.num_classes)
        totals["nc"].append(time.perf_counter() - t0)
        row = []
        for m in methods:
            tool = make_tool(m)
            t0 = time.perf_counter()
            with contextlib.suppress(NotApplicable):  # timed all the same: the check is part of the call
                tool.repair(model, xb, yb, case.num_classes, detection=det)
            totals[m].append(time.perf_counter() - t0)
            row.append(totals[m][-1])
        print(f"{case.name:28s} {totals['nc'][-1]:6.1f} " + " ".join(f"{s:12.2f}" for s in row), flush=True)
    mean = {m: sum(v) / max(1, len(v)) for m, v in totals.items()}
    print(f"{'mean':28s} {mean['nc']:6.1f} " + " ".join(f"{mean[m]:12.2f}" for m in methods))
    print(f"per model, all methods + NC once: {sum(mean.values()):.1f} s")


if __name__ == "__main__":
    main()
