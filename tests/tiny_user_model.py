"""A small "user" model for the audit/repair robustness tests: cheap to train, not a zoo model.

A tiny conv net on scikit-learn's 8x8 digits, trained for a few seconds (good enough to pass the audit's
broken-model checks), its factory file, clean labelled data and a folder of images to screen. Shared by
tests/test_killed_runs.py and tests/test_hostile_strings.py; not a test module itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

FACTORY = """
import torch.nn as nn


def tiny(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes),
    )
"""


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, torch.tensor(d.target)


def make_user_model(root: Path, *, epochs: int = 4) -> Path:
    """Write ``root/nets.py`` (factory ``tiny``), ``root/model.safetensors``, ``root/clean.npz`` (200
    labelled held-out examples) and return ``root``."""
    from eis.usermodel import load_factory, save_weights

    root.mkdir(parents=True, exist_ok=True)
    (root / "nets.py").write_text(FACTORY)
    x, y = digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1300], perm[1300:1500]
    gen = torch.Generator().manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = load_factory(f"{root / 'nets.py'}:tiny")()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for idx in torch.randperm(len(tr), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[tr][idx]), y[tr][idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[te]).argmax(1) == y[te]).float().mean().item()
    assert acc > 0.8, acc
    save_weights(model, root / "model.safetensors")
    np.savez(root / "clean.npz", x=x[te].numpy(), y=y[te].numpy())
    return root


def write_images(folder: Path, names: list[str], n: int | None = None) -> list[str]:
    """8x8 digit PNGs under ``folder`` named by ``names`` (each may hold one sub-folder level); returns the
    names written."""
    from PIL import Image

    x, _ = digits()
    for i, name in enumerate(names[: n or len(names)]):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)).save(path, format="PNG")
    return names


def cli(*args: str) -> list[str]:
    """The command line of a real ``eis`` process (this interpreter, the installed package)."""
    return [sys.executable, "-c", "from eis.cli import app; app()", *[str(a) for a in args]]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of such a process: its own EIS_HOME, one torch thread, no compiling, the fakes
    importable from tests/."""
    env = dict(os.environ)
    env.update(
        EIS_HOME=str(home),
        EIS_COMPILE="0",
        OMP_NUM_THREADS="1",
        COLUMNS="200",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def tiny_suite(prefix: str) -> str:
    """A 3-case digits suite that trains in seconds (2 epochs, low bars): names start with ``prefix``."""
    return f"""
[defaults]
dataset = "digits"
arch = "cnn"
seed = 0
train = {{ epochs = 2 }}
bars = {{ clean_accuracy = 0.3, asr = 0.05 }}

[[case]]
name = "{prefix}-clean"
flaw = {{ kind = "clean" }}

[[case]]
name = "{prefix}-patch"
flaw = {{ kind = "patch", target = 0, pattern = "checkerboard" }}

[[case]]
name = "{prefix}-blend"
flaw = {{ kind = "blend", target = 1, pattern = "noise", alpha = 0.2 }}
"""
