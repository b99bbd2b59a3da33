"""A picture of a case: clean inputs, the same inputs triggered, and the trigger masks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from eis.zoo.case import Case  # noqa: E402


def _img(x: torch.Tensor) -> np.ndarray:
    return (x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)).numpy()


def render_grid(case: Case, out: Path, n: int = 8, seed: int = 0) -> Path:
    """Write a 3-row PNG (clean / triggered / mask) for ``n`` eligible held-out inputs; return its path."""
    truth = case.truth()
    x, y = case.inputs()
    x = x[truth.eligible(y)][:n]
    xt, mask = truth.apply(x, seed)
    model = case.model("cpu")
    with torch.no_grad():
        before, after = model(x).argmax(1), model(xt).argmax(1)
    fig, axes = plt.subplots(3, len(x), figsize=(1.3 * len(x), 4.2), squeeze=False)
    gray = "gray" if x.shape[1] == 1 else None
    for i in range(len(x)):
        axes[0, i].imshow(_img(x[i]), cmap=gray, vmin=0, vmax=1)
        axes[0, i].set_title(f"pred {before[i].item()}", fontsize=7)
        axes[1, i].imshow(_img(xt[i].clamp(0, 1)), cmap=gray, vmin=0, vmax=1)
        axes[1, i].set_title(f"pred {after[i].item()}", fontsize=7)
        axes[2, i].imshow(mask[i].float().numpy(), cmap="magma", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    for row, label in enumerate(("clean", "triggered", "mask")):
        axes[row, 0].text(
            -0.15, 0.5, label, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=8
        )
    fig.suptitle(
        f"{case.name}: {truth.kind}" + (f" -> class {truth.target}" if truth.target is not None else ""),
        fontsize=9,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
