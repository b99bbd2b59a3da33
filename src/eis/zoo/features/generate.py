"""Sampling a feature case: the dictionary, sparse feature activations and the toy model they pass through.

Everything is drawn from ``torch.Generator`` streams seeded by (spec seed, purpose), so the same spec gives
the same tensors on every CPU. Following Elhage et al. (2022), a feature is zero unless it fires; following
Sharkey et al. (2022), the activations a tool sees are a linear superposition of the firing features'
directions. Correlation uses a Gaussian copula over pairs of features; hierarchy makes child features fire
only together with their parent (the setting of feature absorption, Chanin et al. 2024).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from eis.zoo.features.spec import FeatureSpec

REPRESENTED = 0.5  # a toy model represents feature i when its embedding has norm above this (Elhage et al.)


def stream(seed: int, purpose: str) -> torch.Generator:
    """A generator seeded from ``seed`` and a purpose name (independent streams for independent draws)."""
    digest = hashlib.sha256(f"{seed}|{purpose}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:12], 16))


def random_dictionary(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """(n, d) unit-norm feature directions, uniformly distributed on the sphere."""
    w = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (w / w.norm(dim=1, keepdim=True)).float()


def hierarchy(spec: FeatureSpec) -> dict[int, list[int]]:
    """Parent feature -> its child features: parents are 0..P-1, parent p's children follow the parents."""
    first = spec.parents
    return {p: [first + p * spec.children + c for c in range(spec.children)] for p in range(spec.parents)}


def firing_probabilities(spec: FeatureSpec) -> torch.Tensor:
    """(n_features,) float64: ``p_active`` each, or a power law with mean ``p_active`` (``zipf`` > 0)."""
    n = spec.n_features
    if not spec.zipf:
        return torch.full((n,), spec.p_active, dtype=torch.float64)
    w = torch.arange(1, n + 1, dtype=torch.float64) ** -spec.zipf
    return (spec.p_active * w / w.mean()).clamp(max=1.0)


def sample_features(spec: FeatureSpec, rows: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, n_features) non-negative feature activations (see the module docstring)."""
    n = spec.n_features
    z = torch.randn(rows, n, generator=gen, dtype=torch.float64)
    if spec.correlation > 0:  # pairs (0, 1), (2, 3), ... share a latent Gaussian
        shared = torch.randn(rows, (n + 1) // 2, generator=gen, dtype=torch.float64).repeat_interleave(2, 1)
        z = math.sqrt(spec.correlation) * shared[:, :n] + math.sqrt(1 - spec.correlation) * z
    fires = z < torch.special.ndtri(firing_probabilities(spec))
    coin = torch.rand(rows, n, generator=gen) < spec.p_child
    for parent, kids in hierarchy(spec).items():
        fires[:, kids] = coin[:, kids] & fires[:, parent : parent + 1]
    s = spec.magnitude_spread
    magnitude = 1 - s + 2 * s * torch.rand(rows, n, generator=gen)
    return torch.where(fires, magnitude, torch.zeros(()))


class FeatureSource(nn.Module):
    """What a feature case's tools may see: the activation stream (train and held-out rows).

    For ``toy`` cases it also holds the toy model (``W`` (d, n), ``b`` (n)) whose hidden layer produced
    them: ``hidden(x) = x @ W.T``, ``forward(x) = ReLU(hidden(x) @ W + b)`` (Elhage et al.'s ReLU output
    model).
    """

    def __init__(self, train: torch.Tensor, held_out: torch.Tensor, toy: ToyModel | None = None) -> None:
        super().__init__()
        self.register_buffer("train_activations", train.float().contiguous())
        self.register_buffer("eval_activations", held_out.float().contiguous())
        self.toy = toy


class ToyModel(nn.Module):
    """Elhage et al.'s toy model of superposition: ``x -> ReLU(W^T W x + b)`` with ``W`` (d, n)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d, n))
        self.b = nn.Parameter(torch.zeros(n))
        nn.init.xavier_normal_(self.W)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x) @ self.W + self.b)


def train_toy(spec: FeatureSpec, batch: int = 512, lr: float = 3e-3) -> tuple[ToyModel, float]:
    """Train the toy model on fresh feature batches with importance ``decay ** i``; (model, final loss)."""
    gen = stream(spec.seed, "toy-init")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        model = ToyModel(spec.n_features, spec.d)
    importance = spec.importance_decay ** torch.arange(spec.n_features, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = stream(spec.seed, "toy-data")
    loss = torch.zeros(())
    for _ in range(spec.steps):
        x = sample_features(spec, batch, data)
        loss = (importance * (x - model(x)) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), float(loss.detach())


def generate(spec: FeatureSpec) -> tuple[FeatureSource, dict[str, torch.Tensor], dict[str, float]]:
    """(what tools see, sealed tensors, measured numbers) of one case.

    Sealed tensors: ``dictionary`` (n, d) unit directions, ``features_train`` / ``features_eval`` (rows, n)
    per-input feature activations, ``represented`` (n,) which features the activations carry at all.
    """
    train_f = sample_features(spec, spec.n_train, stream(spec.seed, "train"))
    eval_f = sample_features(spec, spec.n_eval, stream(spec.seed, "eval"))
    toy = None
    measured: dict[str, float] = {}
    if spec.source == "toy":
        toy, loss = train_toy(spec)
        with torch.no_grad():
            embed = toy.W.detach().T.clone()  # (n, d): feature i's direction in the hidden layer
            train_x, eval_x = toy.hidden(train_f), toy.hidden(eval_f)
        norms = embed.norm(dim=1)
        represented = norms > REPRESENTED
        dictionary = embed / norms.clamp(min=1e-12)[:, None]
        measured["toy_loss"] = loss
    else:
        dictionary = random_dictionary(spec.n_features, spec.d, stream(spec.seed, "dictionary"))
        represented = torch.ones(spec.n_features, dtype=torch.bool)
        train_x, eval_x = train_f @ dictionary, eval_f @ dictionary
    if spec.noise > 0:
        train_x = train_x + spec.noise * torch.randn(
            train_x.shape, generator=stream(spec.seed, "noise-train")
        )
        eval_x = eval_x + spec.noise * torch.randn(eval_x.shape, generator=stream(spec.seed, "noise-eval"))
    measured["represented_fraction"] = float(represented.float().mean())
    measured["mean_l0"] = float((train_f > 0).sum(1).float().mean())
    sealed = {
        "dictionary": dictionary.contiguous(),
        "features_train": train_f.contiguous(),
        "features_eval": eval_f.contiguous(),
        "represented": represented.to(torch.uint8),
    }
    return FeatureSource(train_x, eval_x, toy), sealed, measured
