"""A small hooked transformer with TransformerLens' hook names and calling conventions.

Compiled tracr programs are attention + ReLU-MLP transformers without LayerNorm and without attention
biases; this module runs them in torch. Every intermediate activation passes through a named
:class:`HookPoint` (``blocks.0.attn.hook_z``, ``blocks.1.hook_mlp_out``, ...), and ``run_with_hooks`` /
``run_with_cache`` / ``hooks`` follow TransformerLens: a hook is ``fn(activation, hook)`` returning a
replacement or None. Unlike TransformerLens 4's ``TransformerBridge``, per-head results (``hook_result``)
and per-head query/key/value inputs (``hook_q_input``, ...) are always on, which is what edge-level
circuit discovery needs. Keys at ``pad_id`` positions are masked out, as in tracr.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of a :class:`HookedTransformer` (names as in TransformerLens' ``HookedTransformerConfig``)."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    d_vocab_out: int
    pad_id: int = -1
    bos_id: int = 0


class HookPoint(nn.Module):
    """Identity module that names an activation; hooks attach to it with ``add_hook``."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        """Register ``fn(activation, hook)``; a non-None return value replaces the activation."""
        return self.register_forward_hook(lambda _m, _i, out: fn(out, self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.zeros(h, d, dh)) for _ in range(3))
        self.W_O = nn.Parameter(torch.zeros(h, dh, d))
        self.scale = dh**-0.5
        for name in (
            "hook_q",
            "hook_k",
            "hook_v",
            "hook_attn_scores",
            "hook_pattern",
            "hook_z",
            "hook_result",
        ):
            setattr(self, name, HookPoint())

    def forward(
        self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-head inputs (batch, pos, head, d_model) -> per-head results (batch, pos, head, d_model)."""
        q = self.hook_q(torch.einsum("bphd,hde->bphe", q_in, self.W_Q))
        k = self.hook_k(torch.einsum("bphd,hde->bphe", k_in, self.W_K))
        v = self.hook_v(torch.einsum("bphd,hde->bphe", v_in, self.W_V))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        pattern = self.hook_pattern(torch.softmax(self.hook_attn_scores(scores), dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = self.hook_post(torch.relu(self.hook_pre(x @ self.W_in + self.b_in)))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn, self.mlp = Attention(cfg), MLP(cfg)
        for name in (
            "hook_resid_pre", "hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_out",
            "hook_resid_mid", "hook_mlp_in", "hook_mlp_out", "hook_resid_post",
        ):  # fmt: skip
            setattr(self, name, HookPoint())

    def forward(self, resid: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        per_head = resid.unsqueeze(2).expand(-1, -1, self.n_heads, -1)
        q_in, k_in, v_in = (
            self.hook_q_input(per_head),
            self.hook_k_input(per_head),
            self.hook_v_input(per_head),
        )
        attn_out = self.hook_attn_out(self.attn(q_in, k_in, v_in, key_mask).sum(2))
        resid = self.hook_resid_mid(resid + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.hook_mlp_in(resid)))
        return self.hook_resid_post(resid + mlp_out)


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.zeros(d_vocab, d_model))


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.zeros(n_ctx, d_model))


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab_out: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.zeros(d_model, d_vocab_out))


class HookedTransformer(nn.Module):
    """Tokens (batch, pos) -> logits (batch, pos, d_vocab_out); TransformerLens-style hooks throughout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg.d_vocab, cfg.d_model)
        self.pos_embed = PosEmbed(cfg.n_ctx, cfg.d_model)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.unembed = Unembed(cfg.d_model, cfg.d_vocab_out)
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        resid = self.hook_embed(self.embed.W_E[tokens]) + self.hook_pos_embed(self.pos_embed.W_pos[pos])[None]
        key_mask = tokens != self.cfg.pad_id
        for block in self.blocks:
            resid = block(resid, key_mask)
        return resid @ self.unembed.W_U

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()) -> Iterator[Any]:
        """Attach ``(name or name filter, fn)`` hooks for the duration of the block."""
        handles = []
        try:
            for name, fn in fwd_hooks:
                names = [n for n in self.hook_dict if name(n)] if callable(name) else [name]
                for n in names:
                    if n not in self.hook_dict:
                        raise KeyError(f"no hook point {n!r}; e.g. {', '.join(list(self.hook_dict)[:4])}")
                    handles.append(self.hook_dict[n].add_hook(fn))
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(
        self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()
    ) -> torch.Tensor:
        """One forward pass with ``fwd_hooks`` attached (TransformerLens' calling convention)."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self, tokens: torch.Tensor, names_filter: Callable[[str], bool] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and every (or every filtered) hooked activation, detached."""
        cache: dict[str, torch.Tensor] = {}

        def store(act: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = act.detach()

        logits = self.run_with_hooks(tokens, [(names_filter or (lambda _n: True), store)])
        return logits, cache
