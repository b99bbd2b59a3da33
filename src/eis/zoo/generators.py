"""Small per-dataset image generators (VAE decoders) and a cache for any small trained module.

The robust feature-level adversary (Casper et al. 2021) perturbs the internal activations of an image
generator. No pretrained generator can be downloaded, so each dataset gets a small convolutional VAE
trained on its training split (digits: a few seconds on 2 cores). Why a VAE and not a GAN: it trains
stably in a few hundred steps with no tuning, and its decoder has the same structure a GAN generator
would (latent -> coarse feature map -> image), which is all the adversary needs: ``head(z)`` gives the
internal activations, ``tail(h)`` renders them.

Trained modules are kept by :func:`eis.cache.cached_state` under ``eis_home()/<kind>/<hash>/`` (verified,
atomic, never unpickled); :func:`cached_module` is shared with the synthesis judge's feature extractor.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.cache import cached_state
from eis.errors import EisError

GENERATOR_VERSION = 1


def cached_module(
    kind: str,
    key: dict[str, Any],
    build: Callable[[dict[str, Any]], nn.Module],
    train: Callable[[nn.Module], dict[str, Any]],
) -> tuple[nn.Module, Path]:
    """A module built by ``build(key)`` with weights from the cache, or trained by ``train`` and cached.

    ``key`` (JSON) identifies the artifact; ``train(module)`` trains in place and returns JSON-able notes
    (losses, seconds) stored in ``meta.json``. Returns the module (CPU, eval mode) and its folder.
    """
    module = build(key)

    def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        notes = train(module)
        return module.state_dict(), notes

    state, _, root = cached_state(kind, key, fit)
    module.load_state_dict(state)
    return module.eval(), root


class VAE(nn.Module):
    """Convolutional VAE; the decoder is ``tail(head(z))`` with ``head(z)`` a (2w, H/2, W/2) feature map."""

    def __init__(self, channels: int, size: int, latent: int = 16, width: int = 32) -> None:
        super().__init__()
        if size % 4:
            raise EisError(f"generator: image side must be a multiple of 4; got {size}")
        self.channels, self.size, self.latent, self.q = channels, size, latent, size // 4
        w = width
        self.enc = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * w * self.q**2, 2 * latent),
        )
        self.fc = nn.Linear(latent, 4 * w * self.q**2)
        self.up1 = nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.out = nn.Conv2d(w, channels, 3, padding=1)
        self.width = w

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Internal activations (N, 2w, H/2, W/2) for latents ``z`` (N, latent)."""
        h = F.relu(self.fc(z)).view(-1, 4 * self.width, self.q, self.q)
        return F.relu(self.up1(h))

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] rendered from internal activations."""
        return torch.sigmoid(self.out(F.relu(self.up2(h))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(z))


def train_vae(
    model: VAE, images: torch.Tensor, *, steps: int, batch_size: int = 64, lr: float = 2e-3, seed: int = 0
) -> dict[str, Any]:
    """Train ``model`` on ``images`` (N, C, H, W) in [0, 1] (Bernoulli likelihood + KL), seeded."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        xb = images[torch.randint(0, len(images), (batch_size,), generator=gen)]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy(model(z), xb, reduction="sum") / len(xb)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum() / len(xb)
        loss = rec + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return {"final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])), "steps": steps}


GENERATOR_STEPS = {"digits": 600, "shapes": 600}


@functools.cache
def _generator(key_json: str) -> VAE:
    key = json.loads(key_json)

    def build(k: dict[str, Any]) -> VAE:
        torch.manual_seed(k["seed"])  # only the initial weights; training draws from its own generator
        return VAE(k["channels"], k["size"], k["latent"], k["width"])

    def train(model: nn.Module) -> dict[str, Any]:
        images = _training_images(key)
        with torch.random.fork_rng(devices=[]):
            return train_vae(model, images, steps=key["steps"], seed=key["seed"])

    with torch.random.fork_rng(devices=[]):
        model, _ = cached_module("generators", key, build, train)
    return model.requires_grad_(False)


_IMAGES: dict[str, torch.Tensor] = {}


def _training_images(key: dict[str, Any]) -> torch.Tensor:
    if key.get("dataset"):
        from eis.zoo.datasets import get_dataset

        return get_dataset(key["dataset"]).train_x
    return _IMAGES[key["images_sha"]]


def get_generator(
    dataset: str | None = None,
    images: torch.Tensor | None = None,
    *,
    steps: int | None = None,
    latent: int = 16,
    width: int = 32,
    seed: int = 0,
) -> VAE:
    """The cached generator of ``dataset`` (trained on its training split), or, with ``images`` instead,
    one trained on those images (keyed by their hash). Returns a frozen CPU module in eval mode."""
    if (dataset is None) == (images is None):
        raise EisError("get_generator needs exactly one of dataset (a name) or images (a tensor)")
    if dataset is not None:
        from eis.zoo.datasets import get_dataset

        c, h, _ = get_dataset(dataset).input_shape
        key: dict[str, Any] = {"dataset": dataset}
    else:
        x = images.detach().float().cpu().contiguous()
        if x.ndim != 4 or len(x) == 0:
            raise EisError(f"generator images must be a non-empty (N, C, H, W) tensor; got {tuple(x.shape)}")
        c, h = x.shape[1], x.shape[2]
        sha = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
        _IMAGES[sha] = x
        key = {"images_sha": sha}
    key |= {
        "v": GENERATOR_VERSION,
        "channels": int(c),
        "size": int(h),
        "latent": latent,
        "width": width,
        "seed": seed,
        "steps": int(steps if steps is not None else GENERATOR_STEPS.get(dataset or "", 600)),
    }
    return _generator(json.dumps(key, sort_keys=True))
