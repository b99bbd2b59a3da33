"""The networks that learn secret rules: a small CNN for images, a one-layer transformer for pairs.

The token model is the zoo's :class:`~eis.zoo.circuits.model.HookedTransformer` with one layer and no
LayerNorm (like the transformer of EIS VII's challenge). A pair (x, y) in Z_p is the sequence
``[x, p + y, 2p]``: x and y have their own tokens, and the logits at the last position (``=``) give the
two labels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.zoo.archs import build_arch
from eis.zoo.circuits.model import HookedTransformer, ModelConfig

IMAGE_ARCH = "cnn"
TOKEN_ARCH = "transformer-1l"


def token_config(p: int) -> ModelConfig:
    """The one-layer transformer for pairs in Z_p (2 heads, d_model 48, d_mlp 96)."""
    return ModelConfig(
        n_layers=1, n_heads=2, d_model=48, d_head=24, d_mlp=96, n_ctx=3, d_vocab=2 * p + 1, d_vocab_out=2
    )


def encode_pairs(pairs: torch.Tensor, p: int) -> torch.Tensor:
    """(N, 2) pairs -> (N, 3) token sequences ``[x, p + y, 2p]``."""
    pairs = pairs.long()
    eq = torch.full_like(pairs[:, :1], 2 * p)
    return torch.cat([pairs[:, :1], p + pairs[:, 1:], eq], 1)


def all_pairs(p: int) -> torch.Tensor:
    """(p*p, 2) every pair (x, y) in Z_p, x major."""
    xs, ys = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1)


def new_model(kind: str, meta: dict[str, Any]) -> nn.Module:
    """An untrained network for a rule case of ``kind`` with manifest-style ``meta``."""
    if kind == "image":
        c, h, _ = meta["input_shape"]
        return build_arch(IMAGE_ARCH, c, 2, h)
    return HookedTransformer(token_config(int(meta["p"])))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 2) logits of a rule network: images as they are, pairs (N, 2) encoded as token sequences."""
    if isinstance(model, HookedTransformer):
        p = (model.cfg.d_vocab - 1) // 2
        return model(encode_pairs(x, p))[:, -1]
    return model(x)


@torch.no_grad()
def network_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N,) bool: the network's label for each input, in batches on the model's device (returned on CPU)."""
    dev = next(model.parameters()).device
    out = [logits(model, x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).bool() if out else torch.zeros(0, dtype=torch.bool)


def train_token_model(
    p: int, pairs: torch.Tensor, labels: torch.Tensor, seed: int, steps: int, device: str = "cpu"
) -> HookedTransformer:
    """Full-batch AdamW (lr 3e-3, weight decay 1) on the training pairs, from a seeded normal init."""
    gen = torch.Generator().manual_seed(seed)
    model = HookedTransformer(token_config(p))
    with torch.no_grad():
        for prm in model.parameters():
            if prm.dim() > 1:
                prm.copy_(torch.randn(prm.shape, generator=gen) * prm.shape[-2] ** -0.5)
    model.to(device).train()
    tokens, y = encode_pairs(pairs, p).to(device), labels.long().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(tokens)[:, -1], y).backward()
        opt.step()
    return model.eval()
