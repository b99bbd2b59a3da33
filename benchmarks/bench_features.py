"""Seconds per features tool per case, and each SAE objective's matched MCC across its sparsity setting.

Timing: for every feature case of ``--suite`` (default: smoke's two), every registered features tool is
run once through the features track (its ``find`` plus scoring) and the wall time, MCC and L0 printed.

Sweep (``--sweep``): each SAE objective is trained at several settings of its sparsity knob (``k`` for
TopK, BatchTopK and Matryoshka; ``l1`` for ReLU + L1; ``l0`` for JumpReLU) on the cases of ``--suite``
whose names start with ``--cases``; prints mean L0, mean MCC (95% bootstrap CI over cases and features)
and mean detection ROC-AUC per setting, so that objectives can be compared at matched L0 (as SAEBench
and SynthSAEBench do) rather than at their default settings.

    .venv/bin/python benchmarks/bench_features.py                               # smoke's feature cases
    .venv/bin/python benchmarks/bench_features.py --suite features --cases sparse --sweep

SAELens: the script reports whether ``sae_lens`` is importable; it is not a dependency of eis (its
``transformer-lens`` and ``datasets`` stack is large), so no comparison runs without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from eis.stats import bootstrap_ci
from eis.tools.base import list_tools, make_tool
from eis.tracks.features import FeaturesTrack
from eis.zoo.build import build_case
from eis.zoo.suites import load_suite

SWEEPS = {
    "sae_relu_l1": ("l1", [0.05, 0.1, 0.2, 0.4]),
    "sae_topk": ("k", [1, 2, 3, 4]),
    "sae_batchtopk": ("k", [1, 2, 3, 4]),
    "sae_matryoshka": ("k", [1, 2, 3, 4]),
    "sae_jumprelu": ("l0", [0.05, 0.1, 0.2, 0.4]),
}


def feature_cases(suite: str, prefix: str) -> list:
    specs = [s for s in load_suite(suite) if type(s).__name__ == "FeatureSpec" and s.name.startswith(prefix)]
    return [build_case(s)[0] for s in specs]


def timing(cases: list) -> None:
    track = FeaturesTrack()
    print(f"{'case':28s} {'tool':20s} {'seconds':>8s} {'mcc':>6s} {'l0':>6s}")
    for case in cases:
        for name in list_tools("features"):
            start = time.perf_counter()
            result = track.run(case, make_tool(name), seed=0)
            took = time.perf_counter() - start
            s = result.scores
            print(f"{case.name:28s} {name:20s} {took:8.2f} {s['mcc']:6.3f} {s['l0']:6.2f}", flush=True)


def sweep(cases: list) -> None:
    track = FeaturesTrack()
    print(f"{'objective':16s} {'setting':>12s} {'L0':>6s} {'MCC [95% CI]':>22s} {'AUROC':>6s} {'s/SAE':>6s}")
    for name, (knob, values) in SWEEPS.items():
        for value in values:
            mcc, l0, auroc, secs = [], [], [], []
            for case in cases:
                start = time.perf_counter()
                r = track.run(case, make_tool(name, **{knob: value}), seed=0)
                secs.append(time.perf_counter() - start)
                mcc.append(r.items["mcc"])
                l0.append(r.scores["l0"])
                auroc.append(r.scores["auroc"])
            ci = bootstrap_ci(mcc)
            print(
                f"{name:16s} {knob + '=' + str(value):>12s} {sum(l0) / len(l0):6.2f} "
                f"{ci.mean:6.3f} [{ci.lo:.3f}, {ci.hi:.3f}] {sum(auroc) / len(auroc):6.3f} "
                f"{sum(secs) / len(secs):6.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--cases", default="", help="only the feature cases whose names start with this")
    parser.add_argument("--sweep", action="store_true", help="sweep each SAE objective's sparsity knob")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = importlib.util.find_spec("sae_lens") is not None
    print(f"sae_lens importable: {found}" + ("" if found else " (not installed: no SAELens comparison)"))
    cases = feature_cases(args.suite, args.cases)
    if not cases:
        raise SystemExit(f"no feature cases in suite {args.suite!r} whose names start with {args.cases!r}")
    if args.sweep:
        sweep(cases)
    else:
        timing(cases)


if __name__ == "__main__":
    main()
