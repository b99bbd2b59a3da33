"""Register your own image-folder dataset and your own architecture, then build and load a trojaned case.

Runs offline in a few seconds:  .venv/bin/python examples/custom_dataset_and_arch.py
It writes a tiny two-class image folder to a temporary directory so that the example is self-contained;
point ``image_folder`` at your own ``root/<class>/<image>.png`` tree instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import eis.zoo
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS, image_folder


def write_toy_folder(root: Path, per_class: int = 150) -> None:
    """Bright-left vs bright-right 16x16 grayscale images, one sub-folder per class."""
    rng = np.random.default_rng(0)
    for label, side in (("left", slice(0, 8)), ("right", slice(8, 16))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.uniform(0, 60, (16, 16))
            img[:, side] += rng.uniform(120, 190)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / label / f"{i}.png")


def mlp(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.ReLU(), nn.Linear(64, num_classes)
    )


def main() -> eis.zoo.Case:
    root = Path(tempfile.mkdtemp(prefix="eis-example-"))
    write_toy_folder(root / "images")
    DATASETS.register("toy", lambda: image_folder(root / "images", size=16, grayscale=True), replace=True)
    ARCHS.register("mlp", mlp, replace=True)
    suite = root / "toy.toml"
    suite.write_text(
        '[[case]]\nname = "toy-mlp-patch"\ndataset = "toy"\narch = "mlp"\n'
        'flaw = { kind = "patch", target = 0, pattern = "checkerboard" }\ntrain = { epochs = 40 }\n'
    )
    (case,) = eis.zoo.build_suite(str(suite))
    truth = case.truth()
    x, y = case.inputs()
    triggered, _ = truth.apply(x[truth.eligible(y)])
    with torch.no_grad():
        asr = (case.model("cpu")(triggered).argmax(1) == truth.target).float().mean().item()
    print(f"{case.name}: clean accuracy {case.meta['clean_accuracy']:.3f}, attack success rate {asr:.3f}")
    return case


if __name__ == "__main__":
    main()
