"""What a realistic-tier model costs to train: seconds per model for the base (trained once per data set and
architecture) and for each fine-tuned trojan, per architecture, on this machine's CPU (one torch thread,
as the zoo's workers use) or a GPU.

    .venv/bin/python benchmarks/bench_realistic.py [--device cpu|cuda] [--steps 20] [--archs resnet18-w16 ...]

Times ``--steps`` training steps of batch 64 on 64 px ``photos`` images (the suite's recipe: AdamW, flips
and crops) after two warm-up steps, and scales them to a model: the base's 12 epochs of 6,000 images and
a fine-tune's 4 epochs. Prints, per architecture, images per second, seconds per base and per fine-tuned
copy, the ratio of the two (what caching the base saves per trojan), and each architecture's cost
relative to ``resnet18-w16`` (the CPU suite's).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from eis.zoo import recipe
from eis.zoo.archs import build_arch
from eis.zoo.datasets import PHOTOS_TRAIN, get_dataset

BATCH, BASE_EPOCHS, FINETUNE_EPOCHS = 64, 12, 4
ARCHS = ("resnet18-w16", "resnet18", "vit-tiny-d96", "vit-tiny")
HEADER = ("arch", "params", "img/s", "base s", "fine-tune s", "base/ft", "vs w16")
SETTINGS = {"lr": 2e-3, "optimizer": "adamw", "weight_decay": 0.05, "augment": ["flip", "crop"]}


def images_per_second(arch: str, x: torch.Tensor, y: torch.Tensor, steps: int, device: str) -> float:
    model = build_arch(arch, 3, 10, x.shape[-1]).to(device)
    opt = recipe.optimizer(model.parameters(), SETTINGS)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def step(i: int) -> None:
        idx = torch.arange(i * BATCH, (i + 1) * BATCH) % len(x)
        xb, yb = recipe.augment(x[idx], SETTINGS, gen).to(device), y[idx].to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    for i in range(2):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    data = get_dataset("photos")
    x, y = data.train_x[: 64 * BATCH], data.train_y[: 64 * BATCH]
    print(f"device {args.device}, {args.steps} steps of {BATCH} images at 64 px per architecture")
    print("{:<14} {:>10} {:>8} {:>9} {:>12} {:>8} {:>7}".format(*HEADER))
    ref = None
    for arch in args.archs:
        rate = images_per_second(arch, x, y, args.steps, args.device)
        params = sum(p.numel() for p in build_arch(arch, 3, 10, 64).parameters())
        base, ft = BASE_EPOCHS * PHOTOS_TRAIN / rate, FINETUNE_EPOCHS * PHOTOS_TRAIN / rate
        ref = ref or (rate if arch == "resnet18-w16" else None)
        rel = f"{ref / rate:.1f}x" if ref else "-"
        print(f"{arch:<14} {params:>10,} {rate:>8.0f} {base:>9.0f} {ft:>12.0f} {base / ft:>8.1f} {rel:>7}")


if __name__ == "__main__":
    main()
