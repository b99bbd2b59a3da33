"""STRIP (Gao et al., ACSAC 2019): triggered inputs stay confidently classified when blended with others.

Each input is superimposed with ``n_overlays`` random clean reference inputs and the model's prediction
entropy is averaged over the overlays. ``blend="add"`` follows the paper (the two images are added, and
saturate: ``clamp(x + x_ref, 0, 1)``, so a bright trigger survives the overlay); ``blend="average"`` uses
``(x + x_ref) / 2``, which halves the trigger's contrast and weakens STRIP on patch triggers. A trigger
dominates the mix, so triggered inputs get unusually low entropy. ``input_scores`` returns the negated
mean entropy (higher = more suspicious).

STRIP is input-level only: it needs the inputs it screens, and a defender holding clean data has no
triggered inputs to show it. There is no honest model-level score from clean data alone (blending clean
inputs with clean inputs says nothing about a trigger the defender never sees), so ``inspect`` returns
``score = NaN`` with the clean-input entropy statistics, including the entropy threshold at the paper's
false-rejection rate (``frr``), in ``details``. The detect track scores STRIP by input-level ROC-AUC
(triggered vs clean inputs of trojaned models).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from eis.batching import rows_per_pass
from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.detection.base import Detection, DetectionTool, model_device


@register_tool
class Strip(DetectionTool):
    """STRIP: prediction entropy of inputs superimposed with random clean inputs (input-level)."""

    name: ClassVar[str] = "strip"
    summary: ClassVar[str] = (
        "input-level: low prediction entropy under superimposition flags triggered inputs"
    )
    model_level: ClassVar[bool] = False
    input_level: ClassVar[bool] = True

    n_overlays: int = 16
    blend: str = "add"
    frr: float = 0.01
    batch_size: int = 1024
    seed: int = 0

    def entropies(self, model: nn.Module, x: torch.Tensor, clean_x: torch.Tensor) -> torch.Tensor:
        """Mean prediction entropy (nats) of each input over ``n_overlays`` superimpositions: (N,)."""
        if x.ndim != 4 or clean_x.ndim != 4 or clean_x.shape[0] == 0:
            raise EisError(
                f"strip needs (N, C, H, W) inputs and reference data; got {tuple(x.shape)}, "
                f"{tuple(clean_x.shape)}"
            )
        if self.blend not in ("add", "average"):
            raise EisError(f"strip blend must be 'add' or 'average'; got {self.blend!r}")
        dev = model_device(model)
        x = x.to(dev, torch.float32)
        ref = clean_x.to(dev, torch.float32)
        n, v = x.shape[0], self.n_overlays
        gen = torch.Generator().manual_seed(self.seed)
        pick = torch.randint(0, ref.shape[0], (n, v), generator=gen).to(dev)
        flat = pick.flatten()
        ent = torch.empty(n * v, device=dev)
        rows_per = rows_per_pass(x.shape[1:], self.batch_size)
        with torch.no_grad():
            for s in range(0, n * v, rows_per):
                sl = slice(s, s + rows_per)
                rows = torch.arange(s, min(s + rows_per, n * v), device=dev) // v
                both = x[rows] + ref[flat[sl]]
                mixed = both.clamp(0, 1) if self.blend == "add" else both / 2
                logp = torch.log_softmax(model(mixed).float(), dim=1)
                ent[sl] = -(logp.exp() * logp).sum(1)
        return ent.view(n, v).mean(1)

    def input_scores(self, model: nn.Module, x: torch.Tensor, clean_x: torch.Tensor) -> torch.Tensor:
        return -self.entropies(model, x, clean_x)

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        half = clean_x.shape[0] // 2
        if half == 0:
            raise EisError("strip needs at least 2 clean inputs (half screened, half as overlays)")
        ent = self.entropies(model, clean_x[:half], clean_x[half:]).cpu()
        thr = float(torch.quantile(ent.double(), self.frr))
        return Detection(
            score=math.nan,
            details={
                "clean_entropy_mean": float(ent.mean()),
                "clean_entropy_std": float(ent.std()) if ent.numel() > 1 else 0.0,
                "entropy_threshold": thr,
                "note": "input-level tool: no model-level score from clean data alone",
            },
        )
