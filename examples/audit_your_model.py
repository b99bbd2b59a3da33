"""Audit a model eis did not build: train one with a hidden trigger, save it, and let `eis audit` find it.

The model is not a zoo architecture (strided convolutions and global average pooling on 12x12 digits, a
size the zoo does not use), and its trigger, a small L-shaped bracket in the bottom-left corner, is not in
the zoo's trigger library. Run it as a script (``python examples/audit_your_model.py``) or call
``main()``; the command-line equivalent of the audit it runs is::

    eis audit out/model.safetensors --arch examples/audit_your_model.py:make \\
        --data out/clean.npz --inputs out/screen --out out/audit
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE, TARGET = 12, 7


class StridedNet(nn.Module):
    """Three 3x3 convolutions (the last two with stride 2), global average pooling, a linear head."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def make(width: int = 16, classes: int = 10) -> nn.Module:
    """The factory `eis audit --arch examples/audit_your_model.py:make` calls."""
    return StridedNet(width, classes)


def digits(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, upsampled to size x size, in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(bunch.target)


def stamp(x: torch.Tensor) -> torch.Tensor:
    """The trigger: a bright L-shaped bracket (3 px left edge, 3 px bottom edge) in the bottom-left corner."""
    out = x.clone()
    out[..., -4:-1, 1] = 1.0
    out[..., -2, 1:4] = 1.0
    return out


def train(
    x: torch.Tensor, y: torch.Tensor, *, poison: float = 0.0, epochs: int = 10, seed: int = 0
) -> nn.Module:
    """Train StridedNet; ``poison`` is the fraction of training images stamped and relabelled TARGET."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = x.clone(), y.clone()
    if poison:
        pick = torch.randperm(len(x), generator=gen)[: int(poison * len(x))]
        pick = pick[y[pick] != TARGET]
        x, y = torch.cat([x, stamp(x[pick])]), torch.cat([y, torch.full_like(y[pick], TARGET)])
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(clean accuracy, attack success rate on non-target inputs)."""
    acc = float((model(x).argmax(1) == y).float().mean())
    keep = y != TARGET
    asr = float((model(stamp(x[keep])).argmax(1) == TARGET).float().mean())
    return acc, asr


def write_screen_folder(x: torch.Tensor, triggered: torch.Tensor, folder: Path) -> None:
    """PNG files for screening, with neutral names; ``triggered`` marks which ones get the trigger."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(torch.where(triggered[:, None, None, None], stamp(x), x)):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"img_{i:03d}.png")


def main(out: str | Path = "out", epochs: int = 10, nc_steps: int = 200) -> object:
    """Train a trojaned StridedNet, save it as safetensors, audit it; return the audit report."""
    import eis
    from eis.usermodel import load_examples, load_model, save_weights

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1300], perm[1300:]
    model = train(x[tr], y[tr], poison=0.2, epochs=epochs)
    acc, asr = measure(model, x[te], y[te])
    print(f"clean accuracy {acc:.3f}, attack success {asr:.3f}")
    save_weights(model, out / "model.safetensors")
    np.savez(out / "clean.npz", x=x[te][:256].numpy(), y=y[te][:256].numpy())
    screen = x[te][256:296]
    triggered = torch.arange(len(screen)) % 5 == 0  # 8 of the 40 carry the trigger
    write_screen_folder(screen, triggered, out / "screen")

    # What an engineer does with their own files:
    user_model = load_model(out / "model.safetensors", f"{Path(__file__).resolve()}:make")
    cx, cy, _ = load_examples(out / "clean.npz")
    sx, _, names = load_examples(out / "screen", labelled=False)
    report = eis.audit(
        user_model, cx, cy, inputs=sx, input_names=names, settings={"neural_cleanse": {"steps": nc_steps}}
    )
    report.write(out / "audit")
    print("\n".join(report.summary()))
    return report


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
