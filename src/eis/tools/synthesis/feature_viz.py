"""Class feature visualisation (Olah et al. 2017), the standard recipe: optimise an image to excite the
target class through a decorrelated parameterisation and random transformations.

- Spatial decorrelation: the image is the inverse real FFT of a learned spectrum scaled by 1 / f^decay, so
  that all frequencies learn at comparable rates and the optimiser does not fill the image with
  high-frequency noise first.
- Colour decorrelation (3 channels): the learned channels are mixed by the square root of the colour
  covariance of the clean inputs (computed per call, so it fits the model's domain), then squashed by a
  sigmoid into [0, 1].
- Transformation robustness: every step scores ``n_aug`` randomly jittered, scaled and rotated copies of
  each image, so only features the model recognises under small transformations survive.

Objective (``objective``): ``"logit"`` (default, the standard recipe: the target's pre-softmax score keeps
improving after the class is certain, where the log-probability saturates and the image stops changing)
or ``"logprob"`` (class-specific). All ``n_images`` images are optimised together in one batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.synthesis.base import SynthesisContext, SynthesisTool, device_of


def spectrum_scale(h: int, w: int, decay: float) -> torch.Tensor:
    """1 / max(f, 1/max(h, w))^decay for the (h, w//2 + 1) frequencies of a real 2-D FFT."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = torch.sqrt(fx**2 + fy**2)
    return 1.0 / torch.clamp(f, min=1.0 / max(h, w)) ** decay


def colour_sqrt(x: torch.Tensor) -> torch.Tensor:
    """(C, C) square root of the channel covariance of ``x``, scaled so its largest column norm is 1."""
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1).double()
    cov = torch.cov(flat) + 1e-6 * torch.eye(c, dtype=torch.float64, device=x.device)
    vals, vecs = torch.linalg.eigh(cov)
    root = vecs @ torch.diag(vals.clamp(min=0).sqrt())
    return (root / root.norm(dim=0).max()).float()


def random_affine(
    x: torch.Tensor, gen: torch.Generator, jitter: float, scale: tuple[float, float], degrees: float
) -> torch.Tensor:
    """Each image of ``x`` jittered by up to ``jitter`` pixels, scaled and rotated (reflection padding)."""
    n, _, h, w = x.shape
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * jitter * 2 / torch.tensor([w, h])
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    a = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@register_tool
class FeatureViz(SynthesisTool):
    """Class visualisation with a Fourier-space, colour-decorrelated image and jitter/scale/rotation."""

    name: ClassVar[str] = "feature_viz"
    summary: ClassVar[str] = "class feature visualisation (Fourier parameterisation + random transformations)"

    n_images: int = 10
    steps: int = 200
    lr: float = 0.05
    decay: float = 1.0
    n_aug: int = 4
    jitter: float = 2.0  # pixels (at 16 px; scaled with the image side)
    scale_lo: float = 0.9
    scale_hi: float = 1.1
    degrees: float = 10.0
    objective: str = "logit"
    seed: int = 0

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        if self.objective not in ("logit", "logprob"):
            raise EisError(f"feature_viz: objective must be 'logit' or 'logprob'; got {self.objective!r}")
        if self.steps < 0 or self.n_aug < 1:
            raise EisError(f"feature_viz: steps must be >= 0 and n_aug >= 1; got {self.steps}, {self.n_aug}")
        dev = device_of(model)
        x = clean_inputs.to(dev, torch.float32)
        k, (c, h, w) = self.n_images, x.shape[1:]
        gen = torch.Generator().manual_seed(self.seed)
        scale = spectrum_scale(h, w, self.decay).to(dev)
        mix = colour_sqrt(x).to(dev) if c > 1 else torch.ones(1, 1, device=dev)
        spec = (torch.randn(k, c, h, w // 2 + 1, 2, generator=gen) * 0.01).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([spec], lr=self.lr)
        tgt = torch.full((k * self.n_aug,), target, device=dev, dtype=torch.long)
        jitter = self.jitter * h / 16

        def render() -> torch.Tensor:
            img = torch.fft.irfft2(torch.view_as_complex(spec) * scale, s=(h, w), norm="ortho") / 4
            img = torch.einsum("dc,kchw->kdhw", mix, img)
            return torch.sigmoid(img)

        for _ in range(self.steps):
            img = render().repeat(self.n_aug, 1, 1, 1)
            aug = random_affine(img, gen, jitter, (self.scale_lo, self.scale_hi), self.degrees)
            logits = model(aug).float()
            logit = self.objective == "logit"
            loss = -logits[:, target].mean() if logit else F.cross_entropy(logits, tgt)
            (grad,) = torch.autograd.grad(loss, [spec])
            opt.zero_grad(set_to_none=True)
            spec.grad = grad
            opt.step()
        with torch.no_grad():
            return render().detach().to(clean_inputs.device)
