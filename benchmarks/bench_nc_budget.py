"""Neural Cleanse early stopping: does it change any verdict, and how much does it save?

Early stopping (``stop_patience``, ``stop_tol``) freezes a class that reached the attack-success threshold
once its best mask norm has not fallen by more than ``stop_tol`` (relative) for ``stop_patience`` steps.
Every model of the population is first inspected with the full schedule (all ``--steps`` steps for every
class), recording each class's best norm after every step. A frozen class's answer is its best norm at
the step it froze and the other classes' runs do not depend on it, so that trace gives, for a grid of
PATIENCE x TOL settings, the norms early stopping would return: per setting the share of models whose
verdict (anomaly index >= 2, the audit's paper threshold) or flagged target (the min-norm class) changes,
the largest |change| in anomaly index and the class-steps run (share of K x steps). The same traces give
shorter step budgets (a run of T steps returns what the full run held after step T): per T, the verdicts
that differ from the full run's and from a run of 2T steps, which says whether the default budget is itself
settled (run with ``--steps 1200`` to see 300 against 600 and 1200). The cheapest grid
setting with no change, and the ``--confirm`` settings (default: the tool's own), are then really run on
every model: their verdicts, index changes and wall-clock speed-up (full seconds over early-stopped
seconds, both measured in this run on the same models and inputs, one torch thread).

Population: the smoke zoo's image models (24 digits models: cnn and resnet; clean, patch, blend, natural,
warp, spurious, permuted) plus a clean and a patch-trojaned ``resnet`` (BatchNorm) on the 3x32x32
``shapes`` dataset, built here once (a few minutes on a CPU, then cached). ``--wide`` adds, for timing
only, a 0.7M-parameter BatchNorm ResNet (the zoo's resnet at width 48) trained for one epoch on shapes.
Inputs: the detect track's draw (256 held-out images, seed 0).

    python benchmarks/bench_nc_budget.py [--confirm 50:0.01] [--steps 300] [--wide] [--only NAME]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

import eis.zoo
from eis.tools.base import make_tool
from eis.tools.detection.neural_cleanse import anomaly_indices, reverse_engineer
from eis.zoo.archs import SmallResNet
from eis.zoo.build import build_case
from eis.zoo.datasets import get_dataset
from eis.zoo.spec import CaseSpec

THRESHOLD = 2.0  # the audit flags a model when its anomaly index is >= the paper's 2
PATIENCES = (10, 20, 30, 50, 75, 100, 150)
TOLS = (0.001, 0.005, 0.01, 0.02, 0.05)
BUDGETS = (25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200)
SHAPES_CASES = [
    CaseSpec("nc-budget-shapes-resnet-clean", "shapes", "resnet", {"kind": "clean"}),
    CaseSpec("nc-budget-shapes-resnet-patch", "shapes", "resnet", {"kind": "patch", "target": 3}),
]


def _inputs(x: torch.Tensor, y: torch.Tensor, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The detect track's draw for seed 0: the first ``n`` of a seeded permutation of the held-out set."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    return x[perm], y[perm]


def population(wide: bool) -> list[dict[str, Any]]:
    """The models: name, arch, truth kind, model, inputs; ``timing_only`` for the briefly trained wide net."""
    specs = [
        s
        for s in eis.zoo.suite_cases("smoke")
        if isinstance(s, CaseSpec) and s.dataset in ("digits", "shapes")
    ]
    cases = [build_case(spec)[0] for spec in [*specs, *SHAPES_CASES]]
    out = []
    for case in cases:
        x, y = _inputs(*case.inputs(split="test"))
        m = case.model(device="cpu")
        out.append(
            {"name": case.name, "arch": f"{case.dataset}-{case.arch}", "kind": case.truth().kind, "model": m,
             "x": x, "y": y, "k": case.num_classes, "timing_only": False}
        )  # fmt: skip
    if wide:
        data = get_dataset("shapes")
        torch.manual_seed(0)
        net = SmallResNet(3, 10, 32, width=48)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for i in range(0, data.train_x.shape[0], 64):  # one epoch
            loss = F.cross_entropy(net(data.train_x[i : i + 64]), data.train_y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = _inputs(data.test_x, data.test_y)
        n_par = sum(p.numel() for p in net.parameters())
        out.append(
            {"name": f"shapes-resnet-w48 ({n_par / 1e6:.2f}M params)", "arch": "shapes-resnet-w48",
             "kind": "clean*", "model": net.eval(), "x": x, "y": y, "k": 10, "timing_only": True}
        )  # fmt: skip
    return out


def verdict(norms: torch.Tensor) -> dict[str, Any]:
    """What the tool reports: the min-norm class and its anomaly index, flagged at >= THRESHOLD."""
    t = int(norms.argmin())
    index = float(anomaly_indices(norms)[t])
    return {"index": index, "flag": index >= THRESHOLD, "target": t}


def replay(trace: torch.Tensor, final: torch.Tensor, patience: int, tol: float) -> tuple[torch.Tensor, int]:
    """Norms and class-steps that early stopping (patience, tol) returns, replayed on a full run's trace."""
    norms, total = final.clone(), 0
    for j, col in enumerate(trace.T.tolist()):
        ref, stall, ran = math.inf, 0, len(col)
        for s, bn in enumerate(col):
            if bn < ref * (1 - tol):
                ref, stall = bn, 0
            elif math.isfinite(bn):
                stall += 1
            if stall >= patience:
                ran, norms[j] = s + 1, bn
                break
        total += ran
    return norms, total


def run(m: dict[str, Any], steps: int, patience: int, tol: float) -> dict[str, Any]:
    """One real Neural Cleanse run with the tool's settings; seconds and class-steps with the verdict."""
    tool = make_tool("neural_cleanse", steps=steps, stop_patience=patience, stop_tol=tol)
    kw = {f: getattr(tool, f) for f in ("lr", "lam", "lam_mode", "patience", "asr_threshold", "batch_size")}
    t0 = time.perf_counter()
    out = reverse_engineer(
        m["model"], m["x"], m["k"], steps=steps, seed=tool.seed, stop_patience=patience, stop_tol=tol,
        trace=patience == 0, **kw,
    )  # fmt: skip
    secs = time.perf_counter() - t0
    return {**verdict(out["norms"]), "secs": secs, "steps": int(out["steps_run"].sum()), **out}


def budgets(models: list[dict[str, Any]], fulls: list[dict[str, Any]], steps: int) -> None:
    """A shorter step budget T read off the full runs: the answers after T steps are what a run of T steps
    returns (the batches and the lambda schedule do not depend on the budget). Per T, how many verdicts and
    targets differ from the full run's, and from the run of twice T (does the verdict still change with more
    steps?)."""
    grid = sorted({t for t in BUDGETS if t < steps} | {steps})
    at = {
        t: [
            verdict(full["answers"][t - 1])
            for m, full in zip(models, fulls, strict=True)
            if not m["timing_only"]
        ]
        for t in grid
    }
    final = at[steps]
    print(f"\nstep budgets read off the full runs ({len(final)} scored models): changes against the "
          f"{steps}-step run and against twice the budget")  # fmt: skip
    print(f"{'steps':>6s} {'flagged':>8s} {'verdict vs full':>16s} {'target vs full':>15s} "
          f"{'max |d index|':>14s} {'verdict vs 2T':>14s} {'cost':>5s}")  # fmt: skip
    for t in grid:
        vs_full = list(zip(final, at[t], strict=True))
        double = list(zip(at[2 * t], at[t], strict=True)) if 2 * t in at else []
        dmax = max((abs(a["index"] - b["index"]) for a, b in vs_full), default=0.0)
        print(
            f"{t:6d} {sum(v['flag'] for v in at[t]):8d} {_count(vs_full, 'flag'):>16s} "
            f"{_count(vs_full, 'target'):>15s} {dmax:14.3f} {_count(double, 'flag'):>14s} {t / steps:5.0%}"
        )


def _count(rows: list[tuple[dict, dict]], key: str) -> str:
    if not rows:
        return "-"
    n = sum(a[key] != b[key] for a, b in rows)
    return f"{n}/{len(rows)} ({n / len(rows):.0%})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument(
        "--confirm",
        default=None,
        help="PATIENCE:TOL,... to run for real (default: the tool's; none: replay only)",
    )
    ap.add_argument("--wide", action="store_true", help="add a 0.7M-parameter resnet (timing only)")
    ap.add_argument("--only", default=None, help="substring: run only the models whose name has it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tool = make_tool("neural_cleanse")
    if args.confirm == "none":
        confirm = []
    elif args.confirm:
        confirm = [(int(p), float(t)) for p, t in (c.split(":") for c in args.confirm.split(","))]
    else:  # the tool's defaults, when they turn early stopping on
        confirm = [(tool.stop_patience, tool.stop_tol)] if tool.stop_patience > 0 else []
    models = [m for m in population(args.wide) if args.only is None or args.only in m["name"]]
    scored = [m for m in models if not m["timing_only"]]
    print(f"{len(models)} models ({len(scored)} scored), {args.steps} steps, one torch thread")
    run(models[0], 3, 0, 0.0)  # warm-up: the first call pays one-off costs

    print(f"\nfull runs ({args.steps} steps per class): anomaly index, F = flagged (>= {THRESHOLD}), target")
    fulls = []
    for m in models:
        full = run(m, args.steps, 0, 0.0)
        fulls.append(full)
        print(
            f"  {m['name'][:44]:44s} {m['arch']:18s} {m['kind']:9s} index {full['index']:7.2f} "
            f"{'F' if full['flag'] else '-'} target {full['target']}  {full['secs']:6.1f} s",
            flush=True,
        )

    falls = []  # how much each class's best norm still falls late in the schedule
    for m, full in zip(models, fulls, strict=True):
        tr = full["trace"]
        for j in range(tr.shape[1]):
            a, b, c = float(tr[args.steps // 2 - 1, j]), float(tr[-51, j]), float(tr[-1, j])
            if not m["timing_only"] and math.isfinite(a):
                falls.append((1 - c / a, 1 - c / b))
    if falls:
        half = sorted(f[0] for f in falls)
        last = sorted(f[1] for f in falls)
        print(
            f"best norm still falling late: over the second half of the schedule by a median "
            f"{half[len(half) // 2]:.1%}, over the last 50 steps by a median {last[len(last) // 2]:.1%} "
            f"(> 1% for {sum(v > 0.01 for v in last) / len(last):.0%} of {len(last)} classes)"
        )
    budgets(models, fulls, args.steps)

    print(f"\nreplayed on the full runs' traces ({len(scored)} scored models)")
    print(f"{'patience':>8s} {'tol':>6s} {'verdict changed':>16s} {'target changed':>15s} "
          f"{'max |d index|':>14s} {'class-steps':>12s}")  # fmt: skip
    ok = []
    for p, t in itertools.product(PATIENCES, TOLS):
        rows, steps = [], 0
        for m, full in zip(models, fulls, strict=True):
            norms, ran = replay(full["trace"], full["norms"], p, t)
            steps += ran
            if not m["timing_only"]:
                rows.append((full, verdict(norms)))
        frac = steps / sum(m["k"] * args.steps for m in models)
        dmax = max((abs(a["index"] - b["index"]) for a, b in rows), default=0.0)
        changed = sum(a["flag"] != b["flag"] or a["target"] != b["target"] for a, b in rows)
        if changed == 0 and rows:
            ok.append((frac, dmax, p, t))
        print(
            f"{p:8d} {t:6g} {_count(rows, 'flag'):>16s} {_count(rows, 'target'):>15s} "
            f"{dmax:14.3f} {frac:12.0%}"
        )
    if ok:
        best = min(ok)
        print(
            f"cheapest setting with no change: patience {best[2]}, tol {best[3]:g} "
            f"({best[0]:.0%} class-steps)"
        )
        if args.confirm != "none" and (best[2], best[3]) not in confirm:
            confirm.append((best[2], best[3]))
    elif scored:
        print("every replayed setting changes at least one verdict or target")

    if not confirm:
        return
    labels = [f"p{p} tol {t:g}" for p, t in confirm]
    print(
        "\nreal runs: each model's full run timed again next to its early-stopped runs (same load); per "
        "setting: index, F = flagged, target, class-steps, speed-up"
    )
    print(f"  {'model':44s} {'full index':>10s}  " + "   ".join(f"{lab:>31s}" for lab in labels))
    per: list[list[tuple[dict, dict]]] = [[] for _ in confirm]
    t_full: dict[str, float] = {}
    t_es: list[dict[str, float]] = [{} for _ in confirm]
    same = True
    for m, first in zip(models, fulls, strict=True):
        full = run(m, args.steps, 0, 0.0)
        same = same and torch.equal(full["norms"], first["norms"])
        t_full[m["arch"]] = t_full.get(m["arch"], 0.0) + full["secs"]
        cells = []
        for i, (p, t) in enumerate(confirm):
            es = run(m, args.steps, p, t)
            t_es[i][m["arch"]] = t_es[i].get(m["arch"], 0.0) + es["secs"]
            if not m["timing_only"]:
                per[i].append((full, es))
            changed = (es["flag"], es["target"]) != (full["flag"], full["target"])
            cells.append(
                f"{es['index']:7.2f} {'F' if es['flag'] else '-'} {es['target']} "
                f"{es['steps'] / (m['k'] * args.steps):4.0%} {full['secs'] / es['secs']:4.1f}x"
                + ("  CHANGED" if changed else "         ")
            )
        print(
            f"  {m['name'][:44]:44s} {full['index']:8.2f} {'F' if full['flag'] else '-'}  "
            + "   ".join(cells),
            flush=True,
        )
    print(f"  (full runs repeated bit for bit: {same})")
    for i, lab in enumerate(labels):
        dmax = max((abs(a["index"] - b["index"]) for a, b in per[i]), default=0.0)
        speed = sum(t_full.values()) / sum(t_es[i].values())
        by_arch = ", ".join(f"{a} {t_full[a] / t_es[i][a]:.2f}x" for a in t_full)
        print(
            f"{lab}: verdict changed {_count(per[i], 'flag')}, target changed {_count(per[i], 'target')}, "
            f"max |d index| {dmax:.3f}, speed-up {speed:.2f}x ({sum(t_full.values()):.0f} s -> "
            f"{sum(t_es[i].values()):.0f} s); by arch: {by_arch}"
        )


if __name__ == "__main__":
    main()
