"""Language-model detection populations: build seconds per model, then the lm_detect track's table.

Builds the LM population members of ``--suite`` (default: smoke's 3 + 3 eval and 3 + 3 train models) on one
torch thread, printing each member's build seconds (wall and CPU), flaw, held-out accuracy and minimum
ASR; then runs every ``lm_detect`` tool on the eval members through the runner (cells cached in
``--store``) and prints each tool's seconds per model and the track's table (AUROC, AP, FPR at 95% TPR,
target accuracy and BLEU with 95% bootstrap CIs, and the verdicts against every control).
``--build-only N`` builds the first N members of the suite only (to time a larger suite's models);
``--per-population N`` builds and scores the first N members of each population (eval and train).

    .venv/bin/python benchmarks/bench_lm_detect.py                          # smoke's population
    .venv/bin/python benchmarks/bench_lm_detect.py --suite lm-detect --build-only 2
    .venv/bin/python benchmarks/bench_lm_detect.py --suite lm-detect --per-population 16
"""

from __future__ import annotations

import argparse
import time

import torch

from eis.results import load
from eis.runner import run_benchmark
from eis.tools.base import list_tools
from eis.tracks.lm_detect import LMDetectTrack
from eis.zoo import build_case
from eis.zoo.language.spec import LMSpec
from eis.zoo.suites import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--store", default="lm_detect_bench.db")
    parser.add_argument("--build-only", type=int, default=None, metavar="N")
    parser.add_argument("--per-population", type=int, default=None, metavar="N")
    args = parser.parse_args()
    torch.set_num_threads(1)
    specs = [s for s in load_suite(args.suite) if isinstance(s, LMSpec) and s.population is not None]
    if args.per_population is not None:
        specs = [s for s in specs if int(s.name.rsplit("-", 1)[1]) < args.per_population]
    if args.build_only is not None:
        specs = specs[: args.build_only]
    cases = []
    for spec in specs:
        case, _ = build_case(spec)
        m = case.truth().measured
        wall, cpu = m["build_seconds"], m.get("build_cpu_seconds", float("nan"))
        acc, asr = m["held_out_accuracy"], m["asr_min"]
        built = f"built in {wall:.1f} s ({cpu:.1f} s CPU)"
        print(f"{spec.name}: {spec.flaw:11s} {built}, acc {acc:.3f}, ASR {asr:.2f}")
        cases.append(case)
    if args.build_only is not None:
        return
    started = time.perf_counter()
    tools = list_tools("lm_detect")
    run_benchmark(cases, tools=tools, tracks=["lm_detect"], workers=0, store=args.store)
    print(f"track: {time.perf_counter() - started:.1f} s for {len(cases)} cases x {len(tools)} tools")
    rows = load(args.store)
    rows = rows[rows.track == "lm_detect"]
    for tool, r in rows.groupby("tool"):
        print(f"{tool:18s} {r.runtime_s.mean():6.2f} s per model (n={len(r)}, first cell includes any fit)")
    table = LMDetectTrack().summarize(rows)
    for _, r in table.iterrows():
        print(f"{r.tool:18s} {r.metric:11s} {r['mean']:6.3f} [{r.lo:.3f}, {r.hi:.3f}] n={r.n}  {r.verdict}")


if __name__ == "__main__":
    main()
