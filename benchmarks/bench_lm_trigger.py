"""Language-model cases and trigger recovery: build seconds per case, then the lm_trigger track's table.

Builds ``--seeds`` backdoored LMs (``--pairs`` trigger-target pairs each, the default ``lm_backdoor``
settings: anywhere, mixed rare / order triggers, drawn lengths and poison rate, 800 steps) and their clean
twins on one torch thread, printing each case's build seconds, held-out accuracy and per-pair ASR; then runs
every ``lm_trigger`` tool on them through the runner (cells cached in ``--store``) and prints recall,
exact, REASR, found, queries and seconds per tool and flaw with 95% bootstrap CIs (over cases, then
targets), recall and REASR at each traced budget (the track's curves; ``--figure`` writes its figure), and
the import time of ``transformers``.

    .venv/bin/python benchmarks/bench_lm_trigger.py                    # smoke's backdoor and twin
    .venv/bin/python benchmarks/bench_lm_trigger.py --seeds 1 2 3 4    # a small population
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch

from eis.results import load
from eis.runner import run_benchmark
from eis.tools.base import list_tools
from eis.tracks.lm_trigger import LMTriggerTrack
from eis.zoo import build_case
from eis.zoo.language.spec import LMSpec
from eis.zoo.suites import load_suite

METRICS = ["recall", "exact", "reasr", "found", "queries", "seconds"]


def import_seconds(module: str) -> float:
    """Wall seconds of ``python -c 'import torch; import <module>'`` minus ``import torch`` alone."""

    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    return run(f"import torch, {module}") - run("import torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", help="backdoor seeds (default: smoke's LM cases)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--store", default="lm_trigger_bench.db")
    parser.add_argument("--figure", help="write the recall-vs-budget figure to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"import transformers (beyond torch): {import_seconds('transformers'):.2f} s")
    if args.seeds:
        specs = [LMSpec(f"lm-{s}", seed=s, pairs=args.pairs) for s in args.seeds]
        specs += [LMSpec(f"lm-{s}-twin", seed=s, pairs=args.pairs, flaw="clean") for s in args.seeds]
    else:
        smoke = [s for s in load_suite("smoke") if isinstance(s, LMSpec) and s.population is None]
        specs = [s for s in smoke if s.flaw in ("lm_backdoor", "clean")]  # not detection-population members
    cases = []
    for spec in specs:
        case, _ = build_case(spec)
        m = case.truth().measured
        asr = [round(p["asr"], 2) for p in m["pairs"]]
        acc = m["held_out_accuracy"]
        wall, cpu = m["build_seconds"], m.get("build_cpu_seconds", float("nan"))
        print(f"{spec.name}: built in {wall:.1f} s ({cpu:.1f} s CPU), accuracy {acc:.3f}, ASR {asr}")
        cases.append(case)
    started = time.perf_counter()
    tools = list_tools("lm_trigger")
    run_benchmark(cases, tools=tools, tracks=["lm_trigger"], workers=0, store=args.store)
    print(f"track: {time.perf_counter() - started:.1f} s for {len(cases)} cases x {len(tools)} tools")
    table = LMTriggerTrack().summarize(load(args.store))
    table = table[table.metric.isin(METRICS) & (table.flaw != "all")]
    for _, r in table.iterrows():
        print(f"{r.tool:27s} {r.flaw:12s} {r.metric:8s} {r['mean']:9.3f} [{r.lo:.3f}, {r.hi:.3f}] n={r.n}")
    print_curves(load(args.store), args.figure)


def print_curves(rows: pd.DataFrame, figure: str | None) -> None:
    """Mean recall and REASR over cases at each traced budget, per tool and flaw; the track's figure."""
    rows = rows[(rows["track"] == "lm_trigger") & (rows["status"] == "ok")]
    for (tool, flaw), g in rows.groupby(["tool", "flaw"]):
        curves = [e["curve"] for e in g["extras"] if e.get("curve", {}).get("budget")]
        if not curves:
            continue
        budgets = [int(b) for b in curves[0]["budget"]]
        for metric in ("recall", "reasr"):
            means = np.mean([c[metric] for c in curves], axis=0)
            cells = " ".join(f"{b}:{v:.2f}" for b, v in zip(budgets, means, strict=True))
            print(f"curve {tool:27s} {flaw:12s} {metric:7s} {cells}")
    figs = LMTriggerTrack().figures(rows)
    if figure and figs:
        figs[0][1].savefig(figure, dpi=100, bbox_inches="tight")
        print(f"figure: {figure}")


if __name__ == "__main__":
    main()
