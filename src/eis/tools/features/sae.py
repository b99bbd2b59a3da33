"""Sparse autoencoders, one class per objective, trained in torch on the task's activations.

All share one architecture (Bricken et al. 2023): ``f = act(W_enc (x - b_dec) + b_enc)``, ``x_hat = W_dec f +
b_dec``, decoder rows kept at unit norm after every step, ``W_enc`` initialised to ``W_dec^T`` and ``b_dec``
to the mean activation (Gao et al. 2024). Inputs are scaled so that their mean squared norm is 1 (as SAELens
normalises activations), and the reconstruction is scaled back. The loss is the squared error summed over
dimensions and averaged over the batch, plus the objective's sparsity term:

- ``sae_relu_l1``: ReLU and an L1 penalty ``l1 * sum_i f_i`` (with unit decoder rows this is Anthropic's
  ``f_i * ||W_dec,i||``).
- ``sae_topk`` (Gao et al. 2024): keep each input's ``k`` largest pre-activations (then ReLU). No AuxK loss.
- ``sae_batchtopk`` (Bussmann et al. 2024): keep the ``k * batch`` largest over the whole batch; at encoding
  time a single threshold, the running mean of the smallest kept activation, replaces the batch top-k.
- ``sae_jumprelu`` (Rajamanoharan et al. 2024): ``f = z * H(z - theta)`` with a learned threshold per latent
  and an L0 penalty ``l0 * sum_i H(z_i - theta_i)``; the step's zero gradient is replaced by the paper's
  straight-through estimator with a rectangle kernel of width ``bandwidth``: d/dtheta of the JumpReLU is
  ``-(theta / eps) K((z - theta) / eps)`` and of the step ``-(1 / eps) K((z - theta) / eps)``.
- ``sae_matryoshka`` (Bussmann et al. 2025): BatchTopK activations, and the loss sums the reconstruction
  error of nested prefixes of the dictionary (the first m/8, m/4, m/2 and m latents) so that early latents
  must explain the input on their own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures, unit_rows


class _Step(torch.autograd.Function):
    """Heaviside H(z - theta) with the JumpReLU paper's pseudo-derivative in theta (none in z)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        z, theta = ctx.saved_tensors
        kernel = ((z - theta).abs() < ctx.eps / 2).to(z.dtype)
        return torch.zeros_like(z), (-grad * kernel / ctx.eps).sum(0), None


class _JumpReLU(torch.autograd.Function):
    """z * H(z - theta): gradient H in z, the pseudo-derivative -(theta / eps) K in theta."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        z, theta = ctx.saved_tensors
        kernel = ((z - theta).abs() < ctx.eps / 2).to(z.dtype)
        return grad * (z > theta).to(z.dtype), (-grad * kernel * theta / ctx.eps).sum(0), None


_INTEGER_SETTINGS = {"steps", "batch_size", "latents", "k", "levels"}


def topk_per_row(z: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of ``z`` keeping only each row's ``k`` largest entries."""
    k = min(k, z.shape[1])
    vals, idx = z.topk(k, dim=1)
    return torch.zeros_like(z).scatter(1, idx, vals.relu())


def topk_batch(z: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of ``z`` keeping only the ``k * rows`` largest entries of the whole batch."""
    flat = z.relu().flatten()
    keep = min(k * z.shape[0], flat.numel())
    vals, idx = flat.topk(keep)
    return torch.zeros_like(flat).scatter(0, idx, vals).view_as(z)


@dataclasses.dataclass
class SparseAutoencoder(FeatureTool):
    """Shared trainer (see the module docstring); subclasses define the activation and the penalty."""

    steps: int = 1000
    batch_size: int = 512
    lr: float = 3e-3
    latents: int = 0  # 0 = the task's width
    sparse: ClassVar[bool] = True

    def _limits(self) -> dict[str, tuple[float, bool]]:
        """Setting -> (lower bound, whether the bound itself is allowed); every setting is a finite number."""
        return {"steps": (1, True), "batch_size": (1, True), "lr": (0, False), "latents": (0, True)}

    def _check_settings(self) -> None:
        for key, (low, closed) in self._limits().items():
            v = getattr(self, key)
            integer = key in _INTEGER_SETTINGS
            ok = (
                isinstance(v, int if integer else int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
            )
            if not ok or not (v >= low if closed else v > low):
                what = "an integer" if integer else "a number"
                bound = f">= {low}" if closed else f"> {low}"
                raise EisError(f"{self.name}: setting {key} must be {what} {bound}, got {v!r}")

    # -- what an objective defines ----------------------------------------------------------------------
    def _extra(self, m: int) -> dict[str, torch.Tensor]:
        """Extra trainable tensors (a JumpReLU's log thresholds)."""
        return {}

    def _encode_train(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return z.relu()

    def _encode_eval(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._encode_train(z, p)

    def _penalty(self, z: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros(())

    def _recon_loss(self, x: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((f @ p["W_dec"] + p["b_dec"] - x) ** 2).sum(1).mean()

    def _after_step(self, z: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> None:
        """Bookkeeping after an optimiser step (a BatchTopK threshold's running mean)."""

    # -- the shared trainer -----------------------------------------------------------------------------
    def find(self, task: FeatureTask) -> FoundFeatures:
        self._check_settings()
        task.check()
        m = self.latents or task.width
        m = min(m, task.width)
        gen = torch.Generator().manual_seed(task.seed)
        train = task.train.detach().cpu().float()
        scale = float(train.pow(2).sum(1).mean().sqrt().clamp(min=1e-12))
        x = train / scale
        d = x.shape[1]
        w_dec = unit_rows(torch.randn(m, d, generator=gen))
        p = {
            "W_dec": w_dec.clone().requires_grad_(),
            "W_enc": w_dec.T.clone().contiguous().requires_grad_(),
            "b_enc": torch.zeros(m, requires_grad=True),
            "b_dec": x.mean(0).clone().requires_grad_(),
            **self._extra(m),
        }
        opt = torch.optim.Adam(p.values(), lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                xb = x[torch.randint(0, len(x), (min(self.batch_size, len(x)),), generator=gen)]
                z = (xb - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
                f = self._encode_train(z, p)
                loss = self._recon_loss(xb, f, p) + self._penalty(z, f, p)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    p["W_dec"].copy_(unit_rows(p["W_dec"]))
                    self._after_step(z.detach(), f.detach(), p)
        with torch.no_grad():
            xi = task.inputs.detach().cpu().float() / scale
            f = self._encode_eval((xi - p["b_dec"]) @ p["W_enc"] + p["b_enc"], p)
            recon = (f @ p["W_dec"] + p["b_dec"]) * scale
            out = FoundFeatures(p["W_dec"].detach().clone(), f * scale, recon)
        return _on(out, task.inputs.device)


def _on(found: FoundFeatures, device: torch.device) -> FoundFeatures:
    return FoundFeatures(
        found.directions.to(device),
        found.activations.to(device),
        None if found.reconstruction is None else found.reconstruction.to(device),
    )


@register_tool
class ReluL1SAE(SparseAutoencoder):
    name: ClassVar[str] = "sae_relu_l1"
    summary: ClassVar[str] = "sparse autoencoder, ReLU + L1 penalty (Bricken et al. 2023)"
    l1: float = 0.2

    def _limits(self) -> dict[str, tuple[float, bool]]:
        return super()._limits() | {"l1": (0, True)}

    def _penalty(self, z: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.l1 * f.sum(1).mean()


@register_tool
class TopKSAE(SparseAutoencoder):
    name: ClassVar[str] = "sae_topk"
    summary: ClassVar[str] = "sparse autoencoder, per-input TopK activation (Gao et al. 2024)"
    k: int = 2

    def _limits(self) -> dict[str, tuple[float, bool]]:
        return super()._limits() | {"k": (1, True)}

    def _encode_train(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return topk_per_row(z, self.k)


@register_tool
class BatchTopKSAE(SparseAutoencoder):
    name: ClassVar[str] = "sae_batchtopk"
    summary: ClassVar[str] = (
        "sparse autoencoder, BatchTopK activation, threshold at inference (Bussmann 2024)"
    )
    k: int = 2

    def _limits(self) -> dict[str, tuple[float, bool]]:
        return super()._limits() | {"k": (1, True)}

    def _extra(self, m: int) -> dict[str, torch.Tensor]:
        self._threshold = torch.zeros(())
        self._seen = 0
        return {}

    def _encode_train(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return topk_batch(z, self.k)

    def _encode_eval(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return z * (z > self._threshold).to(z.dtype)

    def _after_step(self, z: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> None:
        kept = f[f > 0]
        if kept.numel():
            low = kept.min()
            self._threshold = low if self._seen == 0 else 0.99 * self._threshold + 0.01 * low
            self._seen += 1


@register_tool
class MatryoshkaSAE(BatchTopKSAE):
    name: ClassVar[str] = "sae_matryoshka"
    summary: ClassVar[str] = (
        "Matryoshka sparse autoencoder: nested prefixes, BatchTopK (Bussmann et al. 2025)"
    )
    levels: int = 4

    def _limits(self) -> dict[str, tuple[float, bool]]:
        return super()._limits() | {"levels": (1, True)}

    def _recon_loss(self, x: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        m = f.shape[1]
        sizes = sorted({max(1, m >> i) for i in range(self.levels)})
        return sum(((f[:, :s] @ p["W_dec"][:s] + p["b_dec"] - x) ** 2).sum(1).mean() for s in sizes)


@register_tool
class JumpReLUSAE(SparseAutoencoder):
    name: ClassVar[str] = "sae_jumprelu"
    summary: ClassVar[str] = "sparse autoencoder, JumpReLU + L0 via straight-through (Rajamanoharan 2024)"
    l0: float = 0.1
    bandwidth: float = 0.1
    init_threshold: float = 0.2
    lr: float = 5e-3

    def _limits(self) -> dict[str, tuple[float, bool]]:
        return super()._limits() | {"l0": (0, True), "bandwidth": (0, False), "init_threshold": (0, False)}

    def _extra(self, m: int) -> dict[str, torch.Tensor]:
        return {
            "log_theta": torch.full((m,), float(torch.tensor(self.init_threshold).log()), requires_grad=True)
        }

    def _encode_train(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return _JumpReLU.apply(z, p["log_theta"].exp(), self.bandwidth)

    def _penalty(self, z: torch.Tensor, f: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.l0 * _Step.apply(z, p["log_theta"].exp(), self.bandwidth).sum(1).mean()
