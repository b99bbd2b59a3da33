"""Seconds per trojan per synthesis tool (default settings, 2 threads), and the synthesize track's total.

    .venv/bin/python benchmarks/bench_synthesis.py [--suite smoke] [--threads 2] [--cases N] [--judge]

Times ``tool.synthesize`` on each trojaned case of the suite that the track applies to, after one warm-up
call per dataset that builds (or loads) the dataset's generator and judge (their one-off training time is
printed separately). Prints a table of mean seconds per trojan per tool, the projected time of the whole
track on the suite (tools + judge answers), and the ratio to the 15-minute budget.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", type=int, default=0, help="at most this many cases per dataset (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import eis.zoo
    from eis.tools.base import list_tools, make_tool
    from eis.tracks.judge import build_question, get_judge
    from eis.tracks.synthesize import SynthesizeTrack
    from eis.zoo.generators import get_generator

    track = SynthesizeTrack()
    cases = [c for c in eis.zoo.build_suite(args.suite) if track.applies_to(c)]
    if args.cases:
        by_ds: dict[str, list] = {}
        for c in cases:
            by_ds.setdefault(c.dataset, []).append(c)
        cases = [c for cs in by_ds.values() for c in cs[: args.cases]]
    for ds in sorted({c.dataset for c in cases}):
        t0 = time.perf_counter()
        get_generator(ds)
        t1 = time.perf_counter()
        get_judge(ds)
        print(
            f"{ds}: generator {t1 - t0:.1f} s, judge {time.perf_counter() - t1:.1f} s (one-off, then cached)"
        )
    tools = list_tools("synthesis")
    per_tool: dict[str, list[float]] = {t: [] for t in tools}
    judge_s: list[float] = []
    for case in cases:
        x, y = track.inputs(case, 0)
        model, truth = case.model(), case.truth()
        q = build_question(truth, *case.input_shape[:2], key=case.id)
        for name in tools:
            tool = make_tool(name)
            t0 = time.perf_counter()
            images = tool.synthesize(model, int(truth.target), x, labels=y, dataset=case.dataset)
            per_tool[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            get_judge(case.dataset).answer(images, q)
            judge_s.append(time.perf_counter() - t0)
    print(f"\n{len(cases)} trojans of suite {args.suite!r}, {args.threads} threads; seconds per trojan:")
    for name in tools:
        v = per_tool[name]
        print(f"  {name:20s} mean {sum(v) / len(v):7.2f}   max {max(v):7.2f}")
    print(f"  {'(judge answer)':20s} mean {sum(judge_s) / len(judge_s):7.2f}")
    total = sum(sum(v) for v in per_tool.values()) + sum(judge_s)
    print(f"\ntrack total (tools + judge, excluding one-off training): {total:.1f} s")
    print(f"ratio to the 15-minute budget: {total / 900:.3f}")


if __name__ == "__main__":
    main()
