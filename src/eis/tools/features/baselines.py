"""Supervised and simple baselines of the features family, and the random-direction control.

- ``probe`` (supervised): one logistic regression per labelled concept, fitted together (full-batch L-BFGS,
  a small L2 penalty); direction = the weight vector, activation = the logit (fires when above 0). Given
  the labels, it is the ceiling an unsupervised tool is compared with.
- ``diff_in_means`` (supervised): mean activation where the concept is present minus where it is absent;
  activation = the projection minus the midpoint of the two means' projections.
- ``pca``: the principal components of the training activations; ``ica``: scikit-learn's FastICA unmixing,
  directions = the columns of the mixing matrix. Both are signed so that each latent's training activations
  are positively skewed (sparse features are positive), and both give at most ``d`` latents.
- ``neurons``: the standard basis (each activation dimension read as a latent).
- ``random_directions`` (control): ``width`` random unit directions; what finding nothing looks like.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures, unit_rows


def _check_int(tool: str, key: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise EisError(f"{tool}: setting {key} must be an integer >= 1, got {v!r}")


def _skew_signs(acts: torch.Tensor) -> torch.Tensor:
    """+1 / -1 per column: the sign that makes the column's third central moment non-negative."""
    c = acts - acts.mean(0)
    return torch.where((c**3).mean(0) >= 0, 1.0, -1.0)


@register_tool
class LogisticProbe(FeatureTool):
    name: ClassVar[str] = "probe"
    summary: ClassVar[str] = "logistic probe per labelled concept (given labels: the ceiling)"
    supervised: ClassVar[bool] = True
    l2: float = 1e-4
    max_iter: int = 50

    def find(self, task: FeatureTask) -> FoundFeatures:
        _check_int(self.name, "max_iter", self.max_iter)
        if isinstance(self.l2, bool) or not isinstance(self.l2, int | float) or not 0 <= self.l2 < math.inf:
            raise EisError(f"{self.name}: setting l2 must be a number >= 0, got {self.l2!r}")
        task.check(supervised=True)
        assert task.labels is not None
        y = task.labels[:, : task.width].detach().cpu().double()
        x = task.train.detach().cpu().double()
        mean, scale = x.mean(0), x.std(0).clamp(min=1e-8)
        z = (x - mean) / scale
        w = torch.zeros(y.shape[1], z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = z @ w.T + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(z)
            loss = loss + self.l2 * (w**2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            w_x = w / scale  # the weights in the raw activation space
            b_x = b - w_x @ mean
            acts = task.inputs.detach().cpu().double() @ w_x.T + b_x
        dev = task.inputs.device
        return FoundFeatures(unit_rows(w_x).float().to(dev), acts.float().to(dev))


@register_tool
class DiffInMeans(FeatureTool):
    name: ClassVar[str] = "diff_in_means"
    summary: ClassVar[str] = "difference of the mean activation with and without each labelled concept"
    supervised: ClassVar[bool] = True

    def find(self, task: FeatureTask) -> FoundFeatures:
        task.check(supervised=True)
        assert task.labels is not None
        y = task.labels[:, : task.width].detach().cpu().double()
        x = task.train.detach().cpu().double()
        pos = (y.T @ x) / y.sum(0).clamp(min=1)[:, None]
        neg = ((1 - y).T @ x) / (1 - y).sum(0).clamp(min=1)[:, None]
        u = unit_rows(pos - neg)
        mid = ((pos + neg) / 2 * u).sum(1)
        acts = task.inputs.detach().cpu().double() @ u.T - mid
        dev = task.inputs.device
        return FoundFeatures(u.float().to(dev), acts.float().to(dev))


@register_tool
class PCADirections(FeatureTool):
    name: ClassVar[str] = "pca"
    summary: ClassVar[str] = "principal components of the activations (at most d)"

    def find(self, task: FeatureTask) -> FoundFeatures:
        task.check()
        x = task.train.detach().cpu().double()
        mean = x.mean(0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        v = vh[: min(task.width, vh.shape[0])]
        v = v * _skew_signs((x - mean) @ v.T)[:, None]
        acts = (task.inputs.detach().cpu().double() - mean) @ v.T
        recon = acts @ v + mean
        dev = task.inputs.device
        return FoundFeatures(v.float().to(dev), acts.float().to(dev), recon.float().to(dev))


@register_tool
class ICADirections(FeatureTool):
    name: ClassVar[str] = "ica"
    summary: ClassVar[str] = "independent components (scikit-learn FastICA; at most d)"
    max_iter: int = 100

    def find(self, task: FeatureTask) -> FoundFeatures:
        from sklearn.decomposition import FastICA

        _check_int(self.name, "max_iter", self.max_iter)
        task.check()
        x = task.train.detach().cpu().double().numpy()
        m = min(task.width, x.shape[1])
        ica = FastICA(m, whiten="unit-variance", random_state=task.seed, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ConvergenceWarning leaves a usable (if rougher) unmixing
            sources = torch.from_numpy(np.asarray(ica.fit_transform(x)))
        signs = _skew_signs(sources)
        mixing = torch.from_numpy(np.asarray(ica.mixing_)).T * signs[:, None]  # (m, d)
        acts = torch.from_numpy(np.asarray(ica.transform(task.inputs.detach().cpu().double().numpy())))
        acts = acts * signs
        recon = acts @ mixing + torch.from_numpy(np.asarray(ica.mean_))
        dev = task.inputs.device
        return FoundFeatures(unit_rows(mixing).float().to(dev), acts.float().to(dev), recon.float().to(dev))


@register_tool
class Neurons(FeatureTool):
    name: ClassVar[str] = "neurons"
    summary: ClassVar[str] = "raw neurons: each activation dimension as a latent"

    def find(self, task: FeatureTask) -> FoundFeatures:
        task.check()
        m = min(task.width, task.train.shape[1])
        eye = torch.eye(task.train.shape[1], m, device=task.inputs.device).T
        return FoundFeatures(eye.contiguous(), task.inputs[:, :m].float().clone())


@register_tool
class RandomDirections(FeatureTool):
    name: ClassVar[str] = "random_directions"
    summary: ClassVar[str] = "control: random unit directions, activation = projection"
    control: ClassVar[bool] = True

    def find(self, task: FeatureTask) -> FoundFeatures:
        task.check()
        gen = torch.Generator().manual_seed(task.seed)
        u = unit_rows(torch.randn(task.width, task.train.shape[1], generator=gen))
        u = u.to(task.inputs.device)
        return FoundFeatures(u, task.inputs.float() @ u.T)
