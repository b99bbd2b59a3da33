"""The user's factory and data as a zoo architecture and dataset, in this process and in worker processes.

Shadow models are zoo cases: their architecture is the user's factory (``package.module:function`` or
``path/to/file.py:function`` with keyword arguments, wrapped in the user's normalisation) and their dataset
the user's training data with the user's held-out examples as its test split. Both are registered under
content-addressed names: ``user-<hash>`` of the factory's source, name, arguments, normalisation and
weight signature, and ``data-<hash>`` of the tensors. So the case ids (and the cache) change exactly when
one of those does.

Worker processes (the zoo's build pool, the benchmark's cell workers, Ray tasks on this machine) learn
the registrations from the environment: :func:`exported` writes them to a JSON file named by
``$EIS_SHADOWS`` and adds this module to ``$EIS_PLUGINS``; every worker loads the plugins, which
calls :func:`from_environment`, which registers what the file lists. The data travel as a safetensors
file under ``eis_home()/shadows/data``, so a Ray cluster on other machines needs that folder shared (a
local cluster works as it is).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eis.errors import EisError

SETUP_ENV = "EIS_SHADOWS"
PLUGIN = "eis.shadows.setup"


@dataclasses.dataclass(frozen=True)
class UserArch:
    """The user's model factory: called with ``kwargs``, wrapped in ``Normalized`` when mean/std are set."""

    factory: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def of(
        cls,
        factory: str,
        kwargs: dict[str, Any] | None = None,
        mean: Any = None,
        std: Any = None,
    ) -> UserArch:
        return cls(
            factory,
            tuple(sorted((kwargs or {}).items())),
            tuple(float(v) for v in mean) if mean is not None else None,
            tuple(float(v) for v in std) if std is not None else None,
        )

    def build(self) -> nn.Module:
        """A fresh, randomly initialised model from the user's factory."""
        from eis.usermodel import Normalized, load_factory

        model = load_factory(self.factory)(**dict(self.kwargs))
        if not isinstance(model, nn.Module):
            raise EisError(f"factory {self.factory!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model if self.mean is None else Normalized(model, self.mean, self.std)

    @functools.cached_property
    def name(self) -> str:
        """``user-<hash>`` of the factory's source, arguments, normalisation and weight signature."""
        signature = [(k, list(v.shape)) for k, v in self.build().state_dict().items()]
        blob = json.dumps(
            [source_of(self.factory), self.factory.rpartition(":")[2], self.kwargs, self.mean, self.std,
             signature],
            default=str,
        )  # fmt: skip
        return "user-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs), "mean": self.mean, "std": self.std}


def source_of(spec: str) -> str:
    """The source text of the module a ``module:function`` or ``file.py:function`` spec names."""
    from eis.usermodel import load_factory

    fn = load_factory(spec)
    try:
        return inspect.getsource(inspect.getmodule(fn))  # type: ignore[arg-type]
    except (OSError, TypeError):  # a built-in or a module without source: its name stands in
        return spec


def tensors_hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def data_dir() -> Path:
    from eis.paths import eis_home

    d = eis_home() / "shadows" / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


def register_arch(arch: UserArch) -> str:
    """Register the user's factory as a zoo architecture; returns its name."""
    from eis.zoo.archs import ARCHS

    name = arch.name
    ARCHS.register(name, lambda _c, _k, _h: arch.build(), replace=True)
    return name


def register_data(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
) -> str:
    """Register the user's data as a zoo dataset (written once under ``data_dir()``); returns its name."""
    from safetensors.torch import save_file

    name = "data-" + tensors_hash(train_x, train_y, test_x, test_y) + f"-k{num_classes}"
    path = data_dir() / f"{name}.safetensors"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tensors = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)
    _register_data_file(name, path, num_classes)
    return name


def _register_data_file(name: str, path: Path, num_classes: int) -> None:
    from eis.zoo.datasets import DATASETS, ImageData, get_dataset

    def load() -> ImageData:
        from safetensors.torch import load_file

        t = load_file(str(path))
        return ImageData(
            t["train_x"].float(), t["train_y"].long(), t["test_x"].float(), t["test_y"].long(),
            tuple(str(i) for i in range(num_classes)),
        )  # fmt: skip

    DATASETS.register(name, load, replace=True)
    get_dataset.cache_clear()


@contextlib.contextmanager
def exported(arch: UserArch, dataset: str, num_classes: int) -> Iterator[None]:
    """Within the block, worker processes started by eis register ``arch`` and ``dataset`` too."""
    path = data_dir() / f"setup-{os.getpid()}-{arch.name}-{dataset}.json"
    doc = {"arch": arch.to_json(), "dataset": dataset, "num_classes": num_classes}
    path.write_text(json.dumps(doc))
    saved = {k: os.environ.get(k) for k in (SETUP_ENV, "EIS_PLUGINS")}
    plugins = [p for p in (saved["EIS_PLUGINS"] or "").split(",") if p.strip()]
    os.environ[SETUP_ENV] = str(path)
    os.environ["EIS_PLUGINS"] = ",".join(dict.fromkeys([*plugins, PLUGIN]))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        path.unlink(missing_ok=True)


def from_environment() -> None:
    """Register what ``$EIS_SHADOWS`` lists (called by ``load_plugins`` in workers; nothing when unset)."""
    path = os.environ.get(SETUP_ENV)
    if not path or not Path(path).is_file():
        return
    doc = json.loads(Path(path).read_text())
    a = doc["arch"]
    register_arch(UserArch.of(a["factory"], a["kwargs"], a["mean"], a["std"]))
    ds = doc["dataset"]
    _register_data_file(ds, data_dir() / f"{ds}.safetensors", int(doc["num_classes"]))
