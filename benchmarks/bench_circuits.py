"""Circuit discovery: seconds per method per case, and what batching the patching passes buys.

Run from the repository root with the project's interpreter::

    .venv/bin/python benchmarks/bench_circuits.py [--inputs 64] [--repeats 3]

For each case (a shipped tracr program, compiled or realistic = rotated + distractors, zero ablation) it
times every registered circuit tool (best of ``--repeats``, one thread) and prints:

- seconds per tool per case, with the graph's size;
- exact edge patching with 16 ablated copies per forward pass vs one copy per pass (the same scores);
- EAP (one forward + backward) vs exact edge patching: the speed the gradient approximation buys.

No reference implementation runs offline here: auto-circuit (the field's EAP/ACDC library) imports
TransformerLens' ``HookedTransformer``, which TransformerLens 4 removed; it would need TransformerLens < 4
in a separate environment.
"""

from __future__ import annotations

import argparse
import time

import torch

from eis.testing import contract_circuit_task
from eis.tools import list_tools, make_tool

CASES = [
    ("reverse", False),
    ("reverse", True),
    ("sort_unique", True),
    ("detect_pattern", False),
    ("detect_pattern", True),
]


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tools = list_tools("circuits")
    print(f"{'case':28s} {'edges':>5s} " + " ".join(f"{t[:12]:>12s}" for t in tools))
    for program, realistic in CASES:
        task = contract_circuit_task(program, realistic, "zero", n=args.inputs)
        times = []
        for name in tools:
            tool = make_tool(name)
            times.append(_best(lambda tool=tool, task=task: tool.discover(task), args.repeats)[0])
        label = f"{program}{' (realistic)' if realistic else ''}"
        print(f"{label:28s} {len(task.graph.edges):5d} " + " ".join(f"{t:12.3f}" for t in times))
        t16, a = _best(lambda t=task: make_tool("edge_patching", batch_size=16).discover(t), args.repeats)
        t1, b = _best(lambda t=task: make_tool("edge_patching", batch_size=1).discover(t), args.repeats)
        teap, _ = _best(lambda t=task: make_tool("eap").discover(t), args.repeats)
        same = torch.allclose(a.edges, b.edges, atol=1e-6)
        print(
            f"{'':28s} edge patching: 16 copies/pass {t16:.3f} s vs 1 copy/pass {t1:.3f} s = {t1 / t16:.1f}x "
            f"(same scores: {same}); EAP {teap:.3f} s = {t16 / teap:.0f}x faster than exact"
        )


if __name__ == "__main__":
    main()
