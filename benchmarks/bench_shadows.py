"""Shadows per minute: training shadow models of a user's architecture, one worker vs two.

    .venv/bin/python benchmarks/bench_shadows.py strided --shadows 4
    .venv/bin/python benchmarks/bench_shadows.py resnet --shadows 2 --width 48 --epochs 2 --images 1500

For the example's StridedNet (12x12 digits, 14k parameters) and a 3x32x32 BatchNorm ResNet (width 48:
0.7M parameters; benchmarks/shadow_transfer.py's), builds 2N shadows (N clean + N flawed) into a fresh
EIS_HOME with 1 worker and again with 2, and prints the seconds, shadows per minute and the speed-up of 2
workers over 1 measured in this run. Only the training is timed (the detectors' cost is the audit's).
Bars are set low (clean accuracy 0, ASR 0.01) so that nothing is retrained and both runs train the same
models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def build_seconds(arch, data, recipe, workers: int) -> tuple[float, int]:
    from eis.shadows.calibrate import shadow_specs
    from eis.shadows.setup import exported, register_arch, register_data
    from eis.zoo.build import BarError
    from eis.zoo.pool import build_specs

    os.environ["EIS_HOME"] = tempfile.mkdtemp(prefix="eis-bench-shadows-")
    x, y, hx, hy = data
    name, dataset = register_arch(arch), register_data(x, y, hx, hy, 10)
    specs = shadow_specs(recipe, name, dataset, 10, x.shape[1], x.shape[-1], 0.0, f"bench{workers:08d}")
    t0 = time.perf_counter()
    with exported(arch, dataset, 10):
        try:
            built = len(build_specs(specs, workers=workers, device="cpu"))
        except BarError as exc:
            built = len(exc.built)
    return time.perf_counter() - t0, built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=["strided", "resnet"])
    parser.add_argument("--shadows", type=int, default=2)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--images", type=int, default=None, help="training images (resnet)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    import shadow_transfer as st

    from eis.shadows import ShadowRecipe, UserArch

    s = st.setting(args.arch, args.width)
    n = args.images or len(s["x"])
    data = (s["x"][:n], s["y"][:n], s["hx"], s["hy"])
    arch = UserArch.of(s["factory"], s["kwargs"])
    params = sum(p.numel() for p in arch.build().parameters())
    r = {**s["recipe"], "kinds": ("patch",), **({"epochs": args.epochs} if args.epochs else {})}
    recipe = ShadowRecipe(shadows=args.shadows, asr_bar=0.01, **r)
    results = {}
    for workers in (1, 2):
        secs, built = build_seconds(arch, data, recipe, workers)
        results[workers] = secs
        print(
            f"{args.arch} ({params} parameters, {n} images x {recipe.epochs} epochs): {built} shadows with "
            f"{workers} worker(s) in {secs:.1f} s = {60 * built / secs:.2f} shadows/min",
            flush=True,
        )
    print(f"speed-up of 2 workers over 1: {results[1] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
