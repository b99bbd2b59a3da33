"""Control detectors: what a trojan detector must beat to be worth running.

- ``weight_stats``: logistic regression on per-tensor weight statistics (mean, std, max |w|, L2 norm,
  kurtosis), fitted on the training population: a detector that never runs the model. Supervised, so it
  shows how much a population gives away in its weights alone. When the training models differ in their
  layout (a population that mixes architectures), it uses layout-free features instead: the same
  statistics (RMS for the norm) of the first and the last weight matrix, of all weight matrices pooled and
  of all vectors (biases, norm scales) pooled.
- ``random_scorer``: a uniform random score, seeded by the tool seed and a hash of the weights (so that
  different models get different scores): AUROC ~ 0.5 is the floor.
- ``specificity``: stamps random patch triggers on clean inputs and measures the entropy of the mean
  posterior per trigger; a trigger that sends everything to one class gives low entropy. Score =
  log(K) - the lowest entropy (higher = more suspicious); it also returns that random trigger, so it is
  the control for the trigger-recovery metrics too (mask IoU, REASR).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from eis.batching import rows_per_pass
from eis.errors import EisError, ToolRefusal
from eis.tools.base import register_tool
from eis.tools.detection.base import Detection, DetectionTool, check_population, model_device
from eis.zoo.triggers import square_masks


def _stats(w: torch.Tensor, norm: bool = True) -> torch.Tensor:
    """Mean, std, max |w|, L2 norm (or RMS) and kurtosis of the values of ``w`` (float64)."""
    w = w.detach().double().flatten().cpu()
    zero = torch.zeros((), dtype=torch.float64)
    mu, sd = w.mean(), w.std() if w.numel() > 1 else zero
    kurt = ((w - mu) ** 4).mean() / (sd**4 + 1e-12) if w.numel() > 1 else zero
    size = w.norm() if norm else w.pow(2).mean().sqrt()
    return torch.stack([mu, sd, w.abs().max(), size, kurt])


def weight_features(model: nn.Module) -> torch.Tensor:
    """Per-parameter-tensor statistics, concatenated in ``named_parameters`` order: (5 * n_tensors,)."""
    feats = [_stats(p) for _, p in model.named_parameters()]
    if not feats:
        raise ToolRefusal("weight_stats needs a model with parameters")
    return torch.cat(feats)


def pooled_weight_features(model: nn.Module) -> torch.Tensor:
    """Layout-free statistics (20,): first matrix, last matrix, all matrices pooled, all vectors pooled."""
    params = [p.detach() for p in model.parameters()]
    mats = [p for p in params if p.ndim >= 2]
    vecs = [p for p in params if p.ndim < 2]
    if not mats:
        raise ToolRefusal("weight_stats needs a model with weight matrices")
    pooled = [torch.cat([p.flatten() for p in group]) for group in (mats, vecs or mats)]
    return torch.cat([_stats(t, norm=False) for t in (mats[0], mats[-1], *pooled)])


def _layout(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((n, tuple(p.shape)) for n, p in model.named_parameters())


@register_tool
class WeightStats(DetectionTool):
    """Control: logistic regression on per-layer weight statistics, fitted on the training population."""

    name: ClassVar[str] = "weight_stats"
    summary: ClassVar[str] = "control: logistic regression on per-layer weight statistics"
    control: ClassVar[bool] = True
    learned: ClassVar[bool] = True

    c: float = 1.0  # inverse L2 regularisation strength of the logistic regression

    def __post_init__(self) -> None:
        self._state: dict[str, torch.Tensor] | None = None
        self._pooled = False  # layout-free features: the training models differ in their layout

    def _features(self, model: nn.Module) -> torch.Tensor:
        return pooled_weight_features(model) if self._pooled else weight_features(model)

    def fit(
        self,
        models: Sequence[nn.Module],
        labels: Sequence[int],
        clean_x: torch.Tensor,
        clean_y: torch.Tensor,
        num_classes: int,
    ) -> None:
        check_population(labels)
        self._pooled = len({_layout(m) for m in models}) > 1
        feats = torch.stack([self._features(m) for m in models]).numpy()
        mean, scale = feats.mean(0), feats.std(0)
        scale[scale == 0] = 1.0
        lr = LogisticRegression(C=self.c, max_iter=2000)
        lr.fit((feats - mean) / scale, np.asarray(labels, dtype=int))
        self._state = {
            "mean": torch.from_numpy(mean),
            "scale": torch.from_numpy(scale),
            "coef": torch.from_numpy(lr.coef_[0].astype(np.float64)),
            "intercept": torch.tensor([float(lr.intercept_[0])], dtype=torch.float64),
        }

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self._state is None:
            raise EisError("weight_stats has not been fitted; call fit() on a training population first")
        return dict(self._state), {"features": "pooled" if self._pooled else "per_tensor"}

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        missing = {"mean", "scale", "coef", "intercept"} - set(tensors)
        if missing:
            raise EisError(f"weight_stats state is missing {sorted(missing)}")
        self._state = {k: v.double().cpu() for k, v in tensors.items()}
        self._pooled = meta.get("features") == "pooled"

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        if self._state is None:
            raise EisError("weight_stats has not been fitted; call fit() on a training population first")
        f = self._features(model)
        st = self._state
        if f.numel() != st["coef"].numel():
            raise ToolRefusal(
                f"weight_stats was fitted on models with {st['coef'].numel() // 5} weight tensors; "
                f"this one has {f.numel() // 5}"
            )
        logit = float(((f - st["mean"]) / st["scale"]) @ st["coef"] + st["intercept"][0])
        return Detection(score=1 / (1 + math.exp(-max(min(logit, 700), -700))), details={"logit": logit})


def weights_digest(model: nn.Module) -> int:
    """A 63-bit digest of the model's parameters and buffers, for per-model seeding."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


@register_tool
class RandomScorer(DetectionTool):
    """Control: a uniform random score per model (seed + weights digest), names a random target class."""

    name: ClassVar[str] = "random_scorer"
    summary: ClassVar[str] = "control: uniform random score and target class"
    control: ClassVar[bool] = True

    seed: int = 0

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        gen = torch.Generator().manual_seed((weights_digest(model) + self.seed) % 2**63)
        score = float(torch.rand((), generator=gen, dtype=torch.float64))
        target = int(torch.randint(0, num_classes, (), generator=gen))
        return Detection(score=score, target=target)


@register_tool
class Specificity(DetectionTool):
    """Control: random patch triggers on clean inputs; low entropy of the mean posterior = suspicious."""

    name: ClassVar[str] = "specificity"
    summary: ClassVar[str] = "control: random triggers stamped on clean inputs, entropy of the mean posterior"
    control: ClassVar[bool] = True

    n_triggers: int = 64
    min_size: int = 2
    max_size: int = 5
    n_inputs: int = 64
    batch_size: int = 2048
    seed: int = 0

    def triggers(self, c: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random square patches: masks (T, H, W) in {0, 1} and patterns (T, C, H, W) in {0, 1}."""
        if not 1 <= self.min_size <= self.max_size or self.max_size > min(h, w):
            raise EisError(
                f"specificity needs 1 <= min_size <= max_size <= {min(h, w)}; "
                f"got {self.min_size}, {self.max_size}"
            )
        gen = torch.Generator().manual_seed(self.seed)
        t = self.n_triggers
        masks = square_masks(t, h, w, gen, self.min_size, self.max_size).float()
        patterns = (torch.rand(t, c, h, w, generator=gen) > 0.5).float()
        return masks, patterns

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        if clean_x.ndim != 4 or clean_x.shape[0] == 0:
            raise EisError(
                f"specificity needs clean inputs (N, C, H, W) with N > 0; got {tuple(clean_x.shape)}"
            )
        dev = model_device(model)
        x = clean_x[: self.n_inputs].to(dev, torch.float32)
        n, c, h, w = x.shape
        masks, patterns = self.triggers(c, h, w)
        m, p = masks.to(dev)[:, None], patterns.to(dev)
        t = masks.shape[0]
        mean_post = torch.zeros(t, num_classes, device=dev)
        per = max(1, rows_per_pass((c, h, w), self.batch_size) // n)  # triggers per forward pass
        with torch.no_grad():
            for s in range(0, t, per):
                mm, pp = m[s : s + per], p[s : s + per]
                stamped = (1 - mm[:, None]) * x[None] + mm[:, None] * pp[:, None]
                probs = torch.softmax(model(stamped.flatten(0, 1)).float(), dim=1)
                mean_post[s : s + per] = probs.view(-1, n, num_classes).mean(1)
        ent = -(mean_post * mean_post.clamp_min(1e-12).log()).sum(1)
        best = int(ent.argmin())
        return Detection(
            score=math.log(num_classes) - float(ent[best]),
            target=int(mean_post[best].argmax()),
            mask=masks[best],
            pattern=patterns[best],
            details={"min_entropy": float(ent[best]), "mean_entropy": float(ent.mean())},
        )
