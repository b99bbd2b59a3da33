"""The built-in compiled tracr programs, shipped as package data, and the token sequences they read.

``data/<program>.safetensors`` holds the weights in :class:`HookedTransformer` layout and
``data/<program>.json`` the vocabulary, encodings and residual-stream labels; both are written by
``scripts/compile_tracr.py`` (which needs the optional ``tracr`` extra, i.e. jax) and checked there
against the RASP program itself. Loading needs neither jax nor tracr.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any

import torch
from safetensors.torch import load

from eis.errors import EisError
from eis.zoo.circuits.model import HookedTransformer, ModelConfig


@dataclasses.dataclass(frozen=True)
class Program:
    """A compiled program: weights, shape and metadata (``residual_labels`` name tracr's one-hot basis)."""

    name: str
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(**self.meta["config"])

    def model(self) -> HookedTransformer:
        model = HookedTransformer(self.config)
        model.load_state_dict(self.weights)
        return model.eval()


def builtin_programs() -> list[str]:
    """Names of the shipped programs."""
    data = resources.files("eis.zoo.circuits") / "data"
    return sorted(p.name.removesuffix(".json") for p in data.iterdir() if p.name.endswith(".json"))


@functools.cache
def load_program(name: str) -> Program:
    """A shipped program by name (weights are read once per process; callers must not modify them)."""
    if name not in builtin_programs():
        raise EisError(f"unknown tracr program {name!r}; valid: {', '.join(builtin_programs())}")
    data = resources.files("eis.zoo.circuits") / "data"
    meta = json.loads((data / f"{name}.json").read_text())
    weights = load((data / f"{name}.safetensors").read_bytes())
    return Program(name, meta, weights)


def sample_tokens(
    vocab_ids: list[int],
    cfg: ModelConfig,
    n: int,
    seed: int,
    *,
    distinct: bool,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences BOS + tokens + padding, (n, n_ctx) int64, and their lengths (1..n_ctx-1).

    Lengths are drawn uniformly unless given (corrupted inputs reuse the clean lengths); ``distinct``
    draws tokens without replacement (programs such as sort_unique need unique keys).
    """
    g = torch.Generator().manual_seed(seed)
    max_len = cfg.n_ctx - 1
    if lengths is None:
        lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    ids = torch.tensor(vocab_ids)
    if distinct:
        if len(vocab_ids) < max_len:
            raise EisError(f"distinct tokens need a vocabulary of >= {max_len}, got {len(vocab_ids)}")
        body = torch.stack([ids[torch.randperm(len(ids), generator=g)[:max_len]] for _ in range(n)])
    else:
        body = ids[torch.randint(0, len(ids), (n, max_len), generator=g)]
    pos = torch.arange(max_len)[None]
    body = torch.where(pos < lengths[:, None], body, torch.full_like(body, cfg.pad_id))
    bos = torch.full((n, 1), cfg.bos_id, dtype=body.dtype)
    return torch.cat([bos, body], 1), lengths
