"""Realistic variants of compiled weights: distractor components and a random rotation of the residual basis.

Compiled weights are sparse and one-hot, so "which weights are non-zero" would find the circuit without
any interpretability. Two transformations take that away while keeping the circuit known:

- **distractors**: every head or MLP slot the program leaves empty, plus ``extra_heads`` new heads per
  layer, gets random weights that read the real residual stream and write only into ``dead_dims`` new
  residual dimensions that nothing reads. They compute something ("active") but never matter
  ("relevant"). Each random matrix is scaled to the norm of the same matrix of a used component, so
  weight norms do not tell the two apart.
- **rotation**: a random orthogonal change of basis Q of the residual stream (W_E -> W_E Q, readers
  W -> Q^T W, writers W -> W Q, W_U -> Q^T W_U). Without LayerNorm this preserves the function exactly
  (up to float rounding: computed in float64) and leaves no weight zero.
"""

from __future__ import annotations

import dataclasses

import torch

from eis.zoo.circuits.model import ModelConfig

READERS = ("W_Q", "W_K", "W_V")


def _used_heads(w: dict[str, torch.Tensor], cfg: ModelConfig) -> list[tuple[int, int]]:
    return [
        (layer, h)
        for layer in range(cfg.n_layers)
        for h in range(cfg.n_heads)
        if w[f"blocks.{layer}.attn.W_O"][h].any() and w[f"blocks.{layer}.attn.W_V"][h].any()
    ]


def _used_mlps(w: dict[str, torch.Tensor], cfg: ModelConfig) -> list[int]:
    return [
        layer
        for layer in range(cfg.n_layers)
        if w[f"blocks.{layer}.mlp.W_in"].any() and w[f"blocks.{layer}.mlp.W_out"].any()
    ]


def add_distractors(
    weights: dict[str, torch.Tensor], cfg: ModelConfig, *, seed: int, extra_heads: int = 1, dead_dims: int = 8
) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Weights and config with distractor heads and MLPs writing into ``dead_dims`` unread dimensions."""
    g = torch.Generator().manual_seed(seed)
    d, d2, h2 = cfg.d_model, cfg.d_model + dead_dims, cfg.n_heads + extra_heads
    used_heads, used_mlps = _used_heads(weights, cfg), _used_mlps(weights, cfg)
    out: dict[str, torch.Tensor] = {}

    def grow(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        big = torch.zeros(shape, dtype=t.dtype)
        big[tuple(slice(0, s) for s in t.shape)] = t
        return big

    def randn_like_norm(shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        return (x * ref.double().norm() / x.norm()).float()

    out["embed.W_E"] = grow(weights["embed.W_E"], (cfg.d_vocab, d2))
    out["pos_embed.W_pos"] = grow(weights["pos_embed.W_pos"], (cfg.n_ctx, d2))
    out["unembed.W_U"] = grow(weights["unembed.W_U"], (d2, cfg.d_vocab_out))
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        for name in (*READERS, "W_O"):
            t = weights[f"{p}.attn.{name}"]
            shape = (h2, d2, cfg.d_head) if name != "W_O" else (h2, cfg.d_head, d2)
            out[f"{p}.attn.{name}"] = grow(t, shape)
        for h in range(h2):
            if (layer, h) in used_heads or not used_heads:
                continue
            ref_l, ref_h = used_heads[int(torch.randint(len(used_heads), (1,), generator=g))]
            for name in READERS:
                ref = weights[f"blocks.{ref_l}.attn.{name}"][ref_h]
                out[f"{p}.attn.{name}"][h, :d] = randn_like_norm((d, cfg.d_head), ref)
            ref = weights[f"blocks.{ref_l}.attn.W_O"][ref_h]
            out[f"{p}.attn.W_O"][h] = 0
            out[f"{p}.attn.W_O"][h, :, d:] = randn_like_norm((cfg.d_head, dead_dims), ref)
        w_in = grow(weights[f"{p}.mlp.W_in"], (d2, cfg.d_mlp))
        w_out = grow(weights[f"{p}.mlp.W_out"], (cfg.d_mlp, d2))
        b_in = weights[f"{p}.mlp.b_in"].clone()
        b_out = grow(weights[f"{p}.mlp.b_out"], (d2,))
        if layer not in used_mlps and used_mlps:
            ref = used_mlps[int(torch.randint(len(used_mlps), (1,), generator=g))]
            rp = f"blocks.{ref}.mlp"
            w_in = torch.zeros(d2, cfg.d_mlp)
            w_in[:d] = randn_like_norm((d, cfg.d_mlp), weights[f"{rp}.W_in"])
            b_in = randn_like_norm((cfg.d_mlp,), weights[f"{rp}.b_in"])
            w_out = torch.zeros(cfg.d_mlp, d2)
            w_out[:, d:] = randn_like_norm((cfg.d_mlp, dead_dims), weights[f"{rp}.W_out"])
            b_out = torch.zeros(d2)
        out |= {
            f"{p}.mlp.W_in": w_in,
            f"{p}.mlp.b_in": b_in,
            f"{p}.mlp.W_out": w_out,
            f"{p}.mlp.b_out": b_out,
        }
    return out, dataclasses.replace(cfg, d_model=d2, n_heads=h2)


def rotate(weights: dict[str, torch.Tensor], cfg: ModelConfig, *, seed: int) -> dict[str, torch.Tensor]:
    """The same function in a random orthogonal residual basis (float64 arithmetic, float32 result)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(cfg.d_model, cfg.d_model, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None]  # Haar-distributed
    out = {}
    for key, t in weights.items():
        t64 = t.double()
        name = key.rsplit(".", 1)[1]
        if name in ("W_E", "W_pos", "W_O", "W_out", "b_out"):  # writers: rows live in the residual
            t64 = t64 @ q
        elif name in (*READERS, "W_in", "W_U"):  # readers: the residual is their input
            t64 = torch.einsum("dk,...de->...ke", q, t64) if t64.dim() == 3 else q.T @ t64
        out[key] = t64.float()
    return out
