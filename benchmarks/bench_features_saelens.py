"""eis's own SAEs against SAELens's, trained on the same feature cases with the same budget.

SAELens is not an eis dependency. Run this script with a Python that has both eis and ``sae_lens``
installed (e.g. a separate virtual environment made with ``pip install -c constraints.txt sae-lens``),
on the feature cases of ``--suite`` whose names start with ``--cases``::

    PYTHONPATH=src /path/to/venv-with-saelens/bin/python benchmarks/bench_features_saelens.py --cases sparse

For each objective present in both (TopK, BatchTopK, Matryoshka BatchTopK at k = 2, JumpReLU, ReLU + L1),
both implementations train for ``--steps`` steps of 512 rows at learning rate 3e-3 with ``width`` latents;
the script prints matched MCC (95% CI over cases and features), L0, detection ROC-AUC and seconds per SAE,
scored by the features track's own scoring function. SAELens's L1 and L0 coefficients are on a different
scale from eis's (its inputs are normalised differently), so those two rows are not at matched sparsity:
read their L0 before comparing their MCC.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch

from eis.stats import bootstrap_ci
from eis.tools.base import make_tool
from eis.tools.features.base import FeatureTask
from eis.tracks.features import score
from eis.zoo.build import build_case
from eis.zoo.suites import load_suite

BATCH = 512


def batches(x: torch.Tensor, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield x[torch.randint(0, len(x), (BATCH,), generator=gen)]


def saelens_sae(kind: str, d: int, m: int):  # noqa: ANN201  (a sae_lens TrainingSAE)
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainingSAE

    common = {"d_in": d, "d_sae": m, "device": "cpu"}
    cfg = {
        "sae_relu_l1": lambda: StandardTrainingSAEConfig(**common, l1_coefficient=0.2),
        "sae_topk": lambda: TopKTrainingSAEConfig(**common, k=2),
        "sae_batchtopk": lambda: BatchTopKTrainingSAEConfig(**common, k=2),
        "sae_matryoshka": lambda: MatryoshkaBatchTopKTrainingSAEConfig(
            **common, k=2, matryoshka_widths=sorted({max(1, m >> i) for i in range(4)})
        ),
        "sae_jumprelu": lambda: JumpReLUTrainingSAEConfig(**common, l0_coefficient=0.1),
    }[kind]()
    return TrainingSAE.from_dict(cfg.to_dict())


def train_saelens(kind: str, train: torch.Tensor, inputs: torch.Tensor, m: int, steps: int, seed: int):
    from sae_lens import LoggingConfig
    from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

    torch.manual_seed(seed)
    sae = saelens_sae(kind, train.shape[1], m)
    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=3e-3, lr_end=3e-3,
        device="cpu", logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=10,
    )  # fmt: skip
    sae = SAETrainer(cfg, sae, batches(train, seed)).fit()
    with torch.no_grad():
        acts = sae.encode(inputs)
        recon = sae.decode(acts)
        directions = sae.W_dec.detach().clone()
    return directions, acts, recon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="features")
    parser.add_argument("--cases", default="sparse")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    specs = [s for s in load_suite(args.suite) if type(s).__name__ == "FeatureSpec"]
    cases = [build_case(s)[0] for s in specs if s.name.startswith(args.cases)]
    print(f"{'objective':16s} {'impl':8s} {'L0':>6s} {'MCC [95% CI]':>22s} {'AUROC':>6s} {'s/SAE':>6s}")
    for kind in ("sae_topk", "sae_batchtopk", "sae_matryoshka", "sae_jumprelu", "sae_relu_l1"):
        for impl in ("eis", "saelens"):
            mcc, l0, auroc, secs = [], [], [], []
            for case in cases:
                truth = case.truth()
                train, inputs = case.activations("train"), case.activations("eval")
                start = time.perf_counter()
                if impl == "eis":
                    found = make_tool(kind, steps=args.steps).find(
                        FeatureTask(train, inputs, case.width, None, 0)
                    )
                else:
                    from eis.tools.features.base import FoundFeatures

                    found = FoundFeatures(*train_saelens(kind, train, inputs, case.width, args.steps, 0))
                secs.append(time.perf_counter() - start)
                s, items, _ = score(
                    found, truth.dictionary, truth.represented, truth.labels("eval"), inputs, truth.hierarchy
                )
                mcc.append(items["mcc"])
                l0.append(s["l0"])
                auroc.append(s["auroc"])
            ci = bootstrap_ci(mcc)
            print(
                f"{kind:16s} {impl:8s} {sum(l0) / len(l0):6.2f} {ci.mean:6.3f} [{ci.lo:.3f}, {ci.hi:.3f}] "
                f"{sum(auroc) / len(auroc):6.3f} {sum(secs) / len(secs):6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
