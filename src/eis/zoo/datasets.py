"""Dataset registry. Every dataset is generated or ships inside a package: nothing is downloaded.

A dataset factory returns an ``ImageData`` (fixed train/test split, images in [0, 1]). Register your own
in a few lines, e.g. a folder of PNG/JPEG images with one sub-folder per class::

    from eis.zoo.datasets import DATASETS, image_folder

    DATASETS.register("leaves", lambda: image_folder("~/data/leaves", size=32))

after which ``dataset = "leaves"`` works in any suite file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eis.errors import EisError
from eis.registry import Registry
from eis.zoo.scenes import SCENE_CLASSES, SCENE_SIZE, render_scenes
from eis.zoo.shapes import SHAPE_NAMES, render_shapes


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A dataset split into train and held-out test tensors, plus its training defaults."""

    train_x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    epochs: int = 20  # default training epochs for this dataset's cases
    batch_size: int = 64
    lr: float = 2e-3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


DATASETS: Registry[Callable[[], ImageData]] = Registry("dataset")


@functools.cache
def get_dataset(name: str) -> ImageData:
    """The named dataset, built once per process."""
    return DATASETS.get(name)()


@DATASETS.register("digits")
def digits() -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to 16x16 (1,797 real images)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    names = tuple(str(d) for d in range(10))
    return ImageData(x[tr], y[tr], x[te], y[te], names, epochs=30, batch_size=64, lr=2e-3)


@DATASETS.register("shapes")
def shapes() -> ImageData:
    """Procedural 32x32 RGB shapes on varied backgrounds; fixed seeds make the split reproducible."""
    train_x, train_y = render_shapes(8000, 32, seed=1)
    test_x, test_y = render_shapes(1000, 32, seed=2)
    return ImageData(train_x, train_y, test_x, test_y, tuple(SHAPE_NAMES), epochs=7, batch_size=32, lr=3e-3)


@DATASETS.register("scenes")
def scenes() -> ImageData:
    """Procedural 48x48 RGB cluttered scenes (textured backgrounds, 2-5 small distractor objects); the
    label is the shape of the one large object (:mod:`eis.zoo.scenes`)."""
    train_x, train_y = render_scenes(8000, SCENE_SIZE, seed=11)
    test_x, test_y = render_scenes(1000, SCENE_SIZE, seed=12)
    return ImageData(train_x, train_y, test_x, test_y, SCENE_CLASSES, epochs=10, batch_size=64, lr=3e-3)


def image_folder(
    root: str | Path, size: int, test_fraction: float = 0.2, seed: int = 0, grayscale: bool = False
) -> ImageData:
    """Load ``root/<class>/<image>`` files (PNG/JPEG), resized to ``size`` x ``size``."""
    from PIL import Image

    root = Path(root).expanduser()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise EisError(
            f"image folder {str(root)!r} has no class sub-folders; expected root/<class>/<image>.png"
        )
    images, labels = [], []
    for k, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
                img = Image.open(f).convert("L" if grayscale else "RGB").resize((size, size))
                arr = np.asarray(img, dtype=np.float32) / 255.0
                images.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
                labels.append(k)
    if not 0 < test_fraction < 1:
        raise EisError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x, y = torch.tensor(np.stack(images)), torch.tensor(labels)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(x) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return ImageData(x[tr], y[tr], x[te], y[te], tuple(classes))
