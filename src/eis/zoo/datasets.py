"""Dataset registry. Every dataset is generated or ships inside a package: nothing is downloaded.

A dataset factory returns an ``ImageData`` (fixed train/test split, images in [0, 1]). Register your own
in a few lines, e.g. a folder of PNG/JPEG images with one sub-folder per class::

    from eis.zoo.datasets import DATASETS, image_folder

    DATASETS.register("leaves", lambda: image_folder("~/data/leaves", size=32))

after which ``dataset = "leaves"`` works in any suite file. Checking a suite's specs needs the class count
and image size of each dataset, and their case ids its training defaults; give them up front, and the data
is built only when a case trains or is scored::

    DATASETS.register("leaves", load_leaves, info=DatasetInfo(num_classes=5, input_shape=(3, 32, 32)))

A dataset registered without ``info`` is built once, on first use, to learn them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eis.errors import EisError
from eis.registry import Registry
from eis.zoo.photos import PHOTO_CLASSES, render_photos
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


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What checking and hashing a spec needs from its dataset, known without building the data: the class
    count, the input shape (C, H, W) and the training defaults of its cases."""

    num_classes: int
    input_shape: tuple[int, int, int]
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3

    @classmethod
    def of(cls, data: ImageData) -> DatasetInfo:
        """The info of built data."""
        return cls(data.num_classes, data.input_shape, data.epochs, data.batch_size, data.lr)

    def training(self) -> dict[str, Any]:
        """The training defaults, as ``ImageData`` and ``CaseSpec.training()`` take them."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


class DatasetRegistry(Registry[Callable[[], ImageData]]):
    """The dataset factories, each with its :class:`DatasetInfo` where the registrant gave one."""

    def __init__(self) -> None:
        super().__init__("dataset")
        self._info: dict[str, DatasetInfo] = {}
        self._tier: dict[str, str] = {}

    def register(
        self,
        name: str,
        obj: Callable[[], ImageData] | None = None,
        *,
        replace: bool = False,
        info: DatasetInfo | None = None,
        tier: str = "toy",
    ) -> Any:
        """Register factory ``obj`` under ``name`` (without ``obj``: a decorator); ``info`` describes its data
        (replacing a factory drops the info it had unless a new one is given); ``tier`` is the benchmark tier
        its cases belong to (one of ``TIERS``)."""
        if tier not in TIERS:
            raise EisError(f"dataset {name!r}: unknown tier {tier!r}; valid: {', '.join(TIERS)}")

        def add(factory: Callable[[], ImageData]) -> Callable[[], ImageData]:
            Registry.register(self, name, factory, replace=replace)
            if info is None:
                self._info.pop(name, None)
            else:
                self._info[name] = info
            self._tier[name] = tier
            return factory

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        super().unregister(name)
        self._info.pop(name, None)
        self._tier.pop(name, None)

    def tier(self, name: str) -> str:
        """The tier of the named dataset's cases; ``"toy"`` for a name not registered here (a result
        stored by a plugin that is not installed any more)."""
        return self._tier.get(name, "toy")

    def declared_info(self, name: str) -> DatasetInfo | None:
        """The info registered with ``name`` (None where none was given); unknown names are an EisError."""
        self.get(name)
        return self._info.get(name)


# "toy": small models trained from scratch in seconds; "realistic": photograph-like data, field-sized
# architectures, trojans implanted by fine-tuning a cached clean base (eis.zoo.photos, eis.zoo.implant)
TIERS = ("toy", "realistic")
DATASETS = DatasetRegistry()


@functools.cache
def get_dataset(name: str) -> ImageData:
    """The named dataset, built once per process (checked against its registered info, if any)."""
    data = DATASETS.get(name)()
    declared = DATASETS.declared_info(name)
    if declared is not None and DatasetInfo.of(data) != declared:
        raise EisError(f"dataset {name!r} built as {DatasetInfo.of(data)}, but was registered as {declared}")
    return data


def dataset_info(name: str) -> DatasetInfo:
    """Class count, input shape and training defaults of the named dataset: its registered info, without
    building the data; for a dataset registered without info, those of the data (built once, cached)."""
    declared = DATASETS.declared_info(name)
    return declared if declared is not None else DatasetInfo.of(get_dataset(name))


DIGITS_INFO = DatasetInfo(num_classes=10, input_shape=(1, 16, 16), epochs=30, batch_size=64, lr=2e-3)
SHAPES_INFO = DatasetInfo(
    num_classes=len(SHAPE_NAMES), input_shape=(3, 32, 32), epochs=7, batch_size=32, lr=3e-3
)
SCENES_INFO = DatasetInfo(
    num_classes=len(SCENE_CLASSES), input_shape=(3, SCENE_SIZE, SCENE_SIZE), epochs=10, batch_size=64, lr=3e-3
)


@DATASETS.register("digits", info=DIGITS_INFO)
def digits() -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to 16x16 (1,797 real images)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    names = tuple(str(d) for d in range(DIGITS_INFO.num_classes))
    return ImageData(x[tr], y[tr], x[te], y[te], names, **DIGITS_INFO.training())


SHAPES_SPLITS = {"train": (8000, 1), "test": (1000, 2)}  # (images, seed) of each split of `shapes`


@DATASETS.register("shapes", info=SHAPES_INFO)
def shapes() -> ImageData:
    """Procedural 32x32 RGB shapes on varied backgrounds; fixed seeds make the split reproducible."""
    size = SHAPES_INFO.input_shape[-1]
    (n_train, train_seed), (n_test, test_seed) = SHAPES_SPLITS["train"], SHAPES_SPLITS["test"]
    train_x, train_y = render_shapes(n_train, size, seed=train_seed)
    test_x, test_y = render_shapes(n_test, size, seed=test_seed)
    return ImageData(train_x, train_y, test_x, test_y, tuple(SHAPE_NAMES), **SHAPES_INFO.training())


@DATASETS.register("scenes", info=SCENES_INFO)
def scenes() -> ImageData:
    """Procedural 48x48 RGB cluttered scenes (textured backgrounds, 2-5 small distractor objects); the
    label is the shape of the one large object (:mod:`eis.zoo.scenes`)."""
    train_x, train_y = render_scenes(8000, SCENE_SIZE, seed=11)
    test_x, test_y = render_scenes(1000, SCENE_SIZE, seed=12)
    return ImageData(train_x, train_y, test_x, test_y, SCENE_CLASSES, **SCENES_INFO.training())


PHOTOS_TRAIN, PHOTOS_TEST = 6000, 1000


def photos_info(size: int) -> DatasetInfo:
    """The info of the ``photos`` data at ``size`` px (the realistic tier's training defaults: base models
    train these epochs with AdamW, a cosine schedule, flips and crops; see ``eis.zoo.implant``)."""
    return DatasetInfo(
        num_classes=len(PHOTO_CLASSES), input_shape=(3, size, size), epochs=12, batch_size=64, lr=2e-3
    )


def photos(size: int = 64) -> ImageData:
    """Objects with real textures on crops of scikit-image's bundled photographs (:mod:`eis.zoo.photos`):
    ten classes (the large object's shape), 6,000 training and 1,000 held-out images at ``size`` px."""
    train_x, train_y = render_photos(PHOTOS_TRAIN, size, seed=21)
    test_x, test_y = render_photos(PHOTOS_TEST, size, seed=22)
    return ImageData(train_x, train_y, test_x, test_y, PHOTO_CLASSES, **photos_info(size).training())


DATASETS.register("photos", photos, info=photos_info(64), tier="realistic")
DATASETS.register("photos-32", functools.partial(photos, 32), info=photos_info(32), tier="realistic")
DATASETS.register("photos-128", functools.partial(photos, 128), info=photos_info(128), tier="realistic")


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
