"""Overhead of the LM hook layer (:mod:`eis.tools.lm_hooks`) against a plain ``transformers`` forward.

On random GPT-2s in the zoo's configuration (``eis.zoo.language.lm.gpt2_config``: a tiny one, 2 layers,
d_model 32, vocabulary 40; and the zoo's size, 2 layers, d_model 64, its 220 tokens), for a few (batch,
positions) shapes, it times under ``torch.no_grad`` and prints each variant's median seconds per call and
its ratio to the plain forward:

- ``plain``: ``model(input_ids=...)``; ``hidden_states``: the same with ``output_hidden_states=True``;
- ``no hooks``: ``run_with_hooks`` with nothing attached (resolving the hook points costs this much);
- ``cache resid``: ``run_with_cache`` of every block's ``hook_resid_post`` (what hidden_states holds);
- ``cache all``: ``run_with_cache`` of all 29 points; ``patch``: one replacement at ``hook_mlp_out``;
- ``port fwd`` / ``port cache all``: the other design, the circuits track's :class:`HookedTransformer`
  extended to GPT-2 (:class:`PortedGPT2` below: LayerNorms, GELU, biases, weights copied; its logits are
  printed against transformers'), plain and caching all its points.

Design chosen: forward hooks on the ``transformers`` modules, attached for one call. Measured (one torch
thread on the shared 2-core CPU machine while another job loaded it, so rows move by about 10%; medians of 15
rounds; batch 1, 64 and 512 sequences of 16-32 tokens, both sizes): with nothing attached the hook layer costs
0.89-1.15x the plain forward (noise: it runs that forward plus a name lookup); caching every block's
``hook_resid_post`` 0.90-1.17x (against ``output_hidden_states=True``: 0.99-1.18x); caching all 29 points
1.09-1.50x (1.08-1.40x of ``output_hidden_states``); one patch 0.89-1.34x. The port is faster in absolute
terms (0.38-0.41x the transformers forward at one sequence, 0.76-0.85x at 64-512), because it skips
transformers' per-call machinery (about 1 ms at one sequence; a profile shows decorator wrappers, config
look-ups and the KV cache it builds by default), not because its hooks are cheaper: its own cache costs
1.13-1.72x its forward, like the hook layer's. We wrap all the same: a port is a second implementation of
every GPT-2 variant transformers runs (activation functions, attention scaling options, eager / sdpa / flash
attention, padding masks, cached generation) and a second copy of the weights to keep in step; tools that take
gradients or train (GCG, repair by fine-tuning) and the scoring through the model's own forward would see
another object than the one audited; and at the batch sizes tools use the layer's cost is small next to the
forward it hooks. Run::

    .venv/bin/python benchmarks/bench_lm_hooks.py [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from eis.tools.lm_hooks import BLOCK_HOOKS, run_with_cache, run_with_hooks
from eis.zoo.circuits.model import HookedTransformer, HookPoint
from eis.zoo.language.lm import gpt2_config, quiet_transformers

SIZES = {"tiny (d 32, V 40)": (32, 40), "zoo (d 64, V 220)": (64, 220)}
SHAPES = [(1, 16), (64, 32), (512, 32)]
LAYERS = 2


class PortedGPT2(HookedTransformer):
    """The alternative design: the circuits track's hooked transformer extended to GPT-2 (LayerNorms, GELU,
    biases, tied unembedding; weights copied from a ``transformers`` model), every activation through a
    ``HookPoint``; its ``hooks`` / ``run_with_hooks`` / ``run_with_cache`` are the circuits model's own."""

    def __init__(self, hf: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)
        base, self.n_heads = hf.transformer, hf.config.n_head
        self.params = torch.nn.ParameterDict(
            {
                k.replace(".", "_"): torch.nn.Parameter(v.detach().clone())
                for k, v in base.state_dict().items()
            }
        )
        names = ["hook_embed", "hook_pos_embed", "ln_final.hook_normalized"]
        names += [f"blocks.{i}.{n}" for i in range(len(base.h)) for n in BLOCK_HOOKS]
        self.points = torch.nn.ModuleDict({n.replace(".", "_"): HookPoint() for n in names})
        self.hook_dict = {}
        for n in names:
            self.points[n.replace(".", "_")].name = n
            self.hook_dict[n] = self.points[n.replace(".", "_")]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        p, hp, h = self.params, self.hook_dict, self.n_heads

        def ln(x: torch.Tensor, key: str) -> torch.Tensor:
            return F.layer_norm(x, x.shape[-1:], p[key + "_weight"], p[key + "_bias"], 1e-5)

        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = hp["hook_embed"](p["wte_weight"][tokens]) + hp["hook_pos_embed"](p["wpe_weight"][pos][None])
        for i in range(sum(k.endswith("hook_resid_pre") for k in hp)):
            b, w = f"blocks.{i}.", f"h_{i}_"
            x = hp[b + "hook_resid_pre"](x)
            qkv = hp[b + "ln1.hook_normalized"](ln(x, w + "ln_1")) @ p[w + "attn_c_attn_weight"]
            qkv = qkv + p[w + "attn_c_attn_bias"]
            q, k, v = (
                hp[b + f"attn.hook_{n}"](t.unflatten(-1, (h, -1)))
                for n, t in zip("qkv", qkv.chunk(3, -1), strict=True)
            )
            z = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True)
            z = hp[b + "attn.hook_z"](z.transpose(1, 2)).flatten(-2)
            attn = hp[b + "hook_attn_out"](z @ p[w + "attn_c_proj_weight"] + p[w + "attn_c_proj_bias"])
            x = hp[b + "hook_resid_mid"](x + attn)
            pre = hp[b + "mlp.hook_pre"](
                hp[b + "ln2.hook_normalized"](ln(x, w + "ln_2")) @ p[w + "mlp_c_fc_weight"]
                + p[w + "mlp_c_fc_bias"]
            )
            post = hp[b + "mlp.hook_post"](F.gelu(pre, approximate="tanh"))
            x = hp[b + "hook_resid_post"](
                x + hp[b + "hook_mlp_out"](post @ p[w + "mlp_c_proj_weight"] + p[w + "mlp_c_proj_bias"])
            )
        return hp["ln_final.hook_normalized"](ln(x, "ln_f")) @ p["wte_weight"].T


def models(d_model: int, vocab: int) -> tuple[torch.nn.Module, PortedGPT2]:
    """A random GPT-2 in the zoo's configuration and its port to the circuits track's hooked transformer."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    with quiet_transformers():
        gpt2 = GPT2LMHeadModel(gpt2_config(vocab, d_model, LAYERS)).eval()
    return gpt2, PortedGPT2(gpt2).eval()


def variants(gpt2: torch.nn.Module, port: PortedGPT2, ids: torch.Tensor) -> dict[str, Callable]:
    resid = [f"blocks.{i}.hook_resid_post" for i in range(LAYERS)]
    return {
        "plain": lambda: gpt2(input_ids=ids).logits,
        "hidden_states": lambda: gpt2(input_ids=ids, output_hidden_states=True).hidden_states,
        "no hooks": lambda: run_with_hooks(gpt2, ids),
        "cache resid": lambda: run_with_cache(gpt2, ids, names=resid),
        "cache all": lambda: run_with_cache(gpt2, ids),
        "patch": lambda: run_with_hooks(gpt2, ids, [("blocks.0.hook_mlp_out", lambda t, _h: t * 0)]),
        "port fwd": lambda: port(ids),
        "port cache all": lambda: port.run_with_cache(ids),
    }


def seconds_per_call(fn: Callable, min_seconds: float = 0.02) -> float:
    """Mean seconds per call over enough calls to last ``min_seconds``."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds; medians are printed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.rounds} interleaved rounds")
    for label, (d_model, vocab) in SIZES.items():
        gpt2, port = models(d_model, vocab)
        probe = torch.randint(4, vocab, (4, 32), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            gap = float((port(probe) - gpt2(input_ids=probe).logits).abs().max())
        print(f"\n{label}: the port's logits differ from transformers' by at most {gap:.1e}")
        for batch, pos in SHAPES:
            ids = torch.randint(4, vocab, (batch, pos), generator=torch.Generator().manual_seed(0))
            fns = variants(gpt2, port, ids)
            times: dict[str, list[float]] = {name: [] for name in fns}
            with torch.no_grad():
                for fn in fns.values():  # warm-up (and transformers' output-capturing hooks installed)
                    fn()
                for _ in range(args.rounds):
                    for name, fn in fns.items():
                        times[name].append(seconds_per_call(fn))
            med = {name: statistics.median(t) for name, t in times.items()}
            base, hidden = med["plain"], med["hidden_states"]
            print(f"{label}, batch {batch} x {pos} positions: plain forward {base * 1e3:.3f} ms")
            print(f"  {'variant':<15} {'ms':>8} {'x plain':>8} {'x hidden_states':>16}")
            for name, t in med.items():
                print(f"  {name:<15} {t * 1e3:8.3f} {t / base:8.2f} {t / hidden:16.2f}")
            print()


if __name__ == "__main__":
    main()
