"""Ablating a found latent as repair on a backdoored LM, run by run: the ``feature_ablation`` track's
measurement (:mod:`eis.tracks.feature_ablation`) with each tool refitted under several seeds.

For each feature case over a backdoored language model of ``--suite`` whose name starts with ``--cases``,
and each tool of ``--tools`` and seed of ``range(--seeds)`` (SAEs vary with theirs): the latent chosen for
each planted trigger on the training rows, its training ROC-AUC, and with its direction projected out of
the hook point, every pair's attack success rate and the held-out next-token accuracy. Baselines: no
ablation, and the mean of ``--random`` draws of as many random unit directions (seeded).

    .venv/bin/python benchmarks/bench_feature_ablation.py                          # smoke's LM case
    .venv/bin/python benchmarks/bench_feature_ablation.py --suite features --cases lm-backdoor --seeds 3
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import eis.zoo
from eis.tools.base import make_tool
from eis.tools.features import FeatureTask
from eis.tracks.feature_ablation import backdoor_effect, trigger_latents
from eis.zoo.build import build_case
from eis.zoo.suites import load_suite

TOOLS = ("probe", "diff_in_means", "sae_relu_l1", "sae_topk", "sae_batchtopk", "pca", "random_directions")


def trigger_directions(case: eis.zoo.Case, tool: str, seed: int) -> tuple[torch.Tensor, list[float]]:
    """(r, d) the directions of the latents that best separate each trigger concept on the training rows,
    and their training ROC-AUCs (sign-free)."""
    truth = case.truth()
    train = case.activations("train")
    t = make_tool(tool)
    labels = truth.labels("train")
    found = t.find(FeatureTask(train, train, case.width, labels if t.supervised else None, seed))
    cols = [j for j, c in enumerate(truth.concepts) if c.startswith("trigger:")]
    best, auc = trigger_latents(found.activations, labels[:, cols])
    return found.directions[best].float(), [float(a) for a in auc]


def measure(case: eis.zoo.Case, directions: torch.Tensor | None) -> dict[str, Any]:
    """Attack success per pair and held-out next-token accuracy with ``directions`` projected out."""
    return backdoor_effect(eis.zoo.load(case.meta["model"]), case.meta["hook"], directions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--cases", default="lm-backdoor")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--random", type=int, default=5, help="draws of random directions")
    ap.add_argument("--seeds", type=int, default=1, help="tool seeds (a row per tool and seed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    specs = [s for s in load_suite(args.suite) if getattr(s, "source", None) == "lm"]
    cases = [build_case(s)[0] for s in specs if s.name.startswith(args.cases)]
    cases = [c for c in cases if c.truth().model_flaw == "lm_backdoor"]
    print(f"{'case':24s} {'ablated':22s} {'train AUROC':>12s} {'ASR':>16s} {'accuracy':>9s} {'s':>5s}")
    for case in cases:
        base = measure(case, None)
        asr = " ".join(f"{a:.2f}" for a in base["asr"])
        print(f"{case.name:24s} {'nothing':22s} {'':>12s} {asr:>16s} {base['accuracy']:9.3f}")
        n_pairs = len(base["asr"])
        for tool in args.tools.split(","):
            for seed in range(args.seeds):
                start = time.perf_counter()
                dirs, aucs = trigger_directions(case, tool, seed=seed)
                out = measure(case, dirs)
                asr = " ".join(f"{a:.2f}" for a in out["asr"])
                auc = " ".join(f"{a:.2f}" for a in aucs)
                took = time.perf_counter() - start
                name = f"{tool} (seed {seed})"
                print(f"{case.name:24s} {name:22s} {auc:>12s} {asr:>16s} {out['accuracy']:9.3f} {took:5.1f}")
        gen = torch.Generator().manual_seed(0)
        rand = [measure(case, torch.randn(n_pairs, case.activations("train").shape[1], generator=gen))
                for _ in range(args.random)]  # fmt: skip
        asr = " ".join(f"{np.mean([r['asr'][k] for r in rand]):.2f}" for k in range(n_pairs))
        acc = np.mean([r["accuracy"] for r in rand])
        print(f"{case.name:24s} {f'random x{args.random} (mean)':22s} {'':>12s} {asr:>16s} {acc:9.3f}")


if __name__ == "__main__":
    main()
