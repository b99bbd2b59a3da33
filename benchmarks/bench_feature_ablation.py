"""Ablating a found latent as repair on a backdoored LM: does removing the direction that best detects
"trigger present" remove the backdoor, and what does it cost in held-out next-token accuracy?

For each feature case over a backdoored language model (``source = "lm"``) of ``--suite`` whose name starts
with ``--cases``, and each tool of ``--tools``: the tool is fitted on the case's training rows (supervised
tools get the labels), and for each planted pair the latent whose activation best separates ``trigger:i``
on the training rows is chosen, as the ``feature_concepts`` track chooses it. The chosen directions are
projected out of the hook point's activation at every position (``x <- x - Q Q^T x``, Q an orthonormal
basis of the directions: directional ablation, as Arditi et al. 2024 ablate a refusal direction; for an
SAE this removes its decoder direction's component, not exactly the latent's contribution). With the
ablation in place, through the hook layer, the script measures every pair's attack success rate (greedy
decoding emits the target after held-out prompts that hold the trigger, as the zoo measures it) and
held-out next-token accuracy. Baselines: no ablation, and ``--random`` draws of as many random unit
directions (seeded). ``--seeds`` refits each tool with several seeds (SAEs vary with theirs).

    .venv/bin/python benchmarks/bench_feature_ablation.py                          # smoke's LM case
    .venv/bin/python benchmarks/bench_feature_ablation.py --suite features --cases lm-backdoor
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import eis.zoo
from eis.tools.base import make_tool
from eis.tools.features import FeatureTask
from eis.tools.lm_hooks import hooks
from eis.tracks.metrics.features import auroc_matrix
from eis.zoo.build import build_case
from eis.zoo.language.backdoor import Pair, measure_pairs
from eis.zoo.language.build import N_HELD_OUT, N_PROBE
from eis.zoo.language.grammar import encode
from eis.zoo.language.lm import BOS_ID, EOS_ID, next_token_accuracy
from eis.zoo.suites import load_suite

TOOLS = ("probe", "diff_in_means", "sae_relu_l1", "sae_topk", "sae_batchtopk", "pca", "random_directions")


def trigger_directions(case: eis.zoo.Case, tool: str, seed: int) -> tuple[torch.Tensor, list[float]]:
    """(r, d) the directions of the latents that best separate each trigger concept on the training rows,
    and their training ROC-AUCs (sign-free)."""
    truth = case.truth()
    train = case.activations("train")
    t = make_tool(tool)
    labels = truth.labels("train") if t.supervised else None
    found = t.find(FeatureTask(train, train, case.width, labels, seed))
    cols = [j for j, c in enumerate(truth.concepts) if c.startswith("trigger:")]
    auc = auroc_matrix(found.activations.double().numpy(), truth.labels("train")[:, cols].numpy())
    auc = np.maximum(np.nan_to_num(auc, nan=0.5), 1 - np.nan_to_num(auc, nan=0.5))
    best = auc.argmax(axis=0)
    return found.directions[best].float(), [float(auc[j, k]) for k, j in enumerate(best)]


def measure(case: eis.zoo.Case, directions: torch.Tensor | None) -> dict[str, float]:
    """Attack success per pair and held-out next-token accuracy with ``directions`` projected out."""
    lm = eis.zoo.load(case.meta["model"])
    model, lang, truth = lm.model(), lm.language(), lm.truth()
    pairs = [Pair(tuple(p["trigger"]), tuple(p["target"]), p["kind"]) for p in truth.pairs]
    held = lang.documents("held_out", N_HELD_OUT)
    seqs = [[BOS_ID, *encode(lang, d.words), EOS_ID] for d in held]
    fwd = []
    if directions is not None:
        q, _ = torch.linalg.qr(directions.T)  # (d, r) orthonormal basis

        def ablate(act: torch.Tensor, _hook: str) -> torch.Tensor:
            return act - (act @ q) @ q.T

        fwd = [(case.meta["hook"], ablate)]
    with torch.no_grad(), hooks(model, fwd):
        per_pair = measure_pairs(model, lang, pairs, held[:N_PROBE], truth.placement, int(truth.spec["seed"]))
        acc = next_token_accuracy(model, seqs)
    return {"asr": [p["asr"] for p in per_pair], "accuracy": acc}


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
