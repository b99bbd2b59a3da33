"""What a realistic-tier model costs to train: seconds per model for the base (trained once per data set and
architecture) and for each fine-tuned trojan, per architecture, on this machine's CPU (one torch thread,
as the zoo's workers use) or a GPU.

    .venv/bin/python benchmarks/bench_realistic.py [--device cpu|cuda] [--steps 20] [--archs resnet18-w16 ...]
    .venv/bin/python benchmarks/bench_realistic.py --layout [--device cpu|cuda] [--steps 20]

Times ``--steps`` training steps of batch 64 on 64 px ``photos`` images (the suite's recipe: AdamW, flips
and crops) after two warm-up steps, and scales them to a model: the base's 12 epochs of 6,000 images and
a fine-tune's 4 epochs. Prints, per architecture, images per second, seconds per base and per fine-tuned
copy, the ratio of the two (what caching the base saves per trojan), and each architecture's cost
relative to ``resnet18-w16`` (the CPU suite's).

``--layout``: ResNet-18 (width 16) as eis builds it, channels-last, against the same network in the
default layout, in one run: images per second for a training step (batch 64) and for an input-gradient
pass of 320 images (what Neural Cleanse runs 300 times per model: 10 classes x 32 images), their ratio,
and the largest difference between the two layouts' logits.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from eis.zoo import recipe
from eis.zoo.archs import ResNet18, build_arch
from eis.zoo.datasets import PHOTOS_TRAIN, get_dataset

BATCH, BASE_EPOCHS, FINETUNE_EPOCHS = 64, 12, 4
ARCHS = ("resnet18-w16", "resnet18", "vit-tiny-d96", "vit-tiny")
HEADER = ("arch", "params", "img/s", "base s", "fine-tune s", "base/ft", "vs w16")
SETTINGS = {"lr": 2e-3, "optimizer": "adamw", "weight_decay": 0.05, "augment": ["flip", "crop"]}


def timed(step: Callable[[], None], steps: int, device: str) -> float:
    """Calls per second of ``step`` over ``steps`` calls, after two warm-up calls."""
    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def images_per_second(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, device: str
) -> float:
    """Training images per second: AdamW steps of batch 64 with the suite's flips and crops."""
    opt = recipe.optimizer(model.parameters(), SETTINGS)
    gen = torch.Generator().manual_seed(0)
    model.train()

    batches = itertools.count()

    def step() -> None:
        idx = torch.arange(BATCH) + next(batches) * BATCH
        xb, yb = recipe.augment(x[idx % len(x)], SETTINGS, gen).to(device), y[idx % len(x)].to(device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return timed(step, steps, device) * BATCH


def layout_rates(x: torch.Tensor, y: torch.Tensor, steps: int, device: str) -> None:
    """Channels-last ResNet-18 vs the default layout: training and input-gradient images per second."""
    models = {
        layout: ResNet18(3, 10, x.shape[-1], width=16, channels_last=layout == "channels-last").to(device)
        for layout in ("default", "channels-last")
    }
    models["channels-last"].load_state_dict(models["default"].state_dict())
    probe = x[:BATCH].to(device)
    diff = (models["default"].eval()(probe) - models["channels-last"].eval()(probe)).abs().max().item()
    grads_x = x[: 10 * 32].to(device)
    print(f"device {device}, resnet18-w16 at {x.shape[-1]} px; largest logit difference {diff:.1e}")
    print("{:<14} {:>14} {:>16}".format("layout", "train img/s", "input-grad img/s"))
    rates = {}
    for layout, model in models.items():
        train = images_per_second(model, x, y, steps, device)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

        def grad_pass(net: torch.nn.Module = model) -> None:
            xi = grads_x.clone().requires_grad_(True)
            torch.autograd.grad(net(xi).logsumexp(1).sum(), xi)

        rates[layout] = (train, timed(grad_pass, steps, device) * len(grads_x))
        print(f"{layout:<14} {rates[layout][0]:>14.0f} {rates[layout][1]:>16.0f}")
    ratio = [c / d for c, d in zip(rates["channels-last"], rates["default"], strict=True)]
    print(f"{'ratio':<14} {ratio[0]:>13.2f}x {ratio[1]:>15.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--layout", action="store_true", help="channels-last vs default layout (ResNet-18)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    data = get_dataset("photos")
    x, y = data.train_x[: 64 * BATCH], data.train_y[: 64 * BATCH]
    if args.layout:
        layout_rates(x, y, args.steps, args.device)
        return
    print(f"device {args.device}, {args.steps} steps of {BATCH} images at 64 px per architecture")
    print("{:<14} {:>10} {:>8} {:>9} {:>12} {:>8} {:>7}".format(*HEADER))
    ref = None
    for arch in args.archs:
        model = build_arch(arch, 3, 10, 64).to(args.device)
        params = sum(p.numel() for p in model.parameters())
        rate = images_per_second(model, x, y, args.steps, args.device)
        base, ft = BASE_EPOCHS * PHOTOS_TRAIN / rate, FINETUNE_EPOCHS * PHOTOS_TRAIN / rate
        ref = ref or (rate if arch == "resnet18-w16" else None)
        rel = f"{ref / rate:.1f}x" if ref else "-"
        print(f"{arch:<14} {params:>10,} {rate:>8.0f} {base:>9.0f} {ft:>12.0f} {base / ft:>8.1f} {rel:>7}")


if __name__ == "__main__":
    main()
