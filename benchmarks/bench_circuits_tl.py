"""Our hooked transformer against TransformerLens 4's ``TransformerBridge`` on the same tracr program.

TransformerLens and tracr live only in this benchmark's own virtual environment, never in the project's::

    python3 -m venv benchmarks/.venv-tl
    benchmarks/.venv-tl/bin/pip install -c constraints.txt torch==2.13.0 transformer-lens==4.3.0 \
        tracr-pypi 'jax[cpu]'

(``python benchmarks/bench_circuits_tl.py --setup`` runs those two commands.) Then, from the repository
root::

    benchmarks/.venv-tl/bin/python benchmarks/bench_circuits_tl.py

It compiles ``reverse`` afresh with tracr, loads it into a ``TransformerBridge`` with TransformerLens'
own tracr utilities, and loads the shipped weights into :class:`eis.zoo.circuits.model.HookedTransformer`
(by file path: this environment lacks eis's other dependencies). On the same full-length inputs (the
bridge does not mask padding) it prints the largest logit difference, then runs one circuit method written
against TransformerLens hooks (zero each head's ``hook_z`` slice and each ``hook_mlp_out``, score the drop
of the answer logit) unchanged on both models and prints the largest score difference and the times.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venv-tl"
DATA = ROOT / "src" / "eis" / "zoo" / "circuits" / "data"


def setup() -> None:
    subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    pkgs = ["torch==2.13.0", "transformer-lens==4.3.0", "tracr-pypi", "jax[cpu]"]
    subprocess.check_call([str(VENV / "bin" / "pip"), "install", "-c", str(ROOT / "constraints.txt"), *pkgs])


def zero_hook_scores(model, tokens, answers, n_layers: int, n_heads: int) -> dict[str, float]:
    """The circuit method, written once against TransformerLens hooks: |drop of the mean answer logit|."""
    import torch

    def metric(logits):
        return logits.gather(-1, answers[..., None])[..., 0][:, 1:].mean()

    with torch.no_grad():
        base = metric(model(tokens))
        out = {}
        for layer in range(n_layers):
            for head in range(n_heads):

                def zero(z, hook, head=head):
                    z = z.clone()
                    z[:, :, head] = 0
                    return z

                logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
                out[f"a{layer}.h{head}"] = float((base - metric(logits)).abs())
            hooks = [(f"blocks.{layer}.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]
            out[f"m{layer}"] = float((base - metric(model.run_with_hooks(tokens, fwd_hooks=hooks))).abs())
    return out


def _best(fn, repeats: int = 5) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    import torch
    import transformer_lens.model_bridge.sources  # noqa: F401  (registers boot_native)
    from safetensors.torch import load_file
    from tracr.compiler import compiling, lib
    from tracr.rasp import rasp
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities import tracr as tl_tracr

    torch.set_num_threads(1)
    meta = json.loads((DATA / "reverse.json").read_text())
    rasp.RASPExpr._ids = itertools.count(1)  # the same labels as scripts/compile_tracr.py
    prog = lib.make_reverse(rasp.tokens)
    compiled = compiling.compile_rasp_to_model(
        prog, vocab={"a", "b", "c"}, max_seq_len=5, compiler_bos="BOS", compiler_pad="PAD"
    )
    bridge = TransformerBridge.boot_native(tl_tracr.make_tracr_transformer_bridge_config(compiled))
    bridge.load_state_dict(
        tl_tracr.make_tracr_transformer_bridge_state_dict(compiled, output_label=prog.label), strict=False
    )
    bridge.eval()

    spec = importlib.util.spec_from_file_location("_eis_model", ROOT / "src/eis/zoo/circuits/model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    ours = mod.HookedTransformer(mod.ModelConfig(**meta["config"]))
    ours.load_state_dict(load_file(str(DATA / "reverse.safetensors")))
    ours.eval()

    g = torch.Generator().manual_seed(0)
    enc = meta["input_encoding"]
    body = torch.randint(enc["a"], enc["c"] + 1, (64, 5), generator=g)
    tokens = torch.cat([torch.full((64, 1), enc["BOS"]), body], 1)
    with torch.no_grad():
        a, b = ours(tokens), bridge(tokens)
    print(f"max |logit difference| ours vs TransformerBridge: {(a - b).abs().max().item():.3g}")
    answers = a.argmax(-1)
    cfg = meta["config"]
    t_ours, s_ours = _best(lambda: zero_hook_scores(ours, tokens, answers, cfg["n_layers"], cfg["n_heads"]))
    t_tl, s_tl = _best(lambda: zero_hook_scores(bridge, tokens, answers, cfg["n_layers"], cfg["n_heads"]))
    diff = max(abs(s_ours[k] - s_tl[k]) for k in s_ours)
    print(f"zero-hook patching scores: {json.dumps({k: round(v, 3) for k, v in s_ours.items()})}")
    print(f"max |score difference|: {diff:.3g}")
    print(
        f"patching time: ours {t_ours * 1000:.1f} ms, TransformerBridge {t_tl * 1000:.1f} ms "
        f"({t_tl / t_ours:.1f}x)"
    )
    t_f1, _ = _best(lambda: ours(tokens[:1]))
    t_f2, _ = _best(lambda: bridge(tokens[:1]))
    print(f"forward, batch 1: ours {t_f1 * 1000:.2f} ms, TransformerBridge {t_f2 * 1000:.2f} ms")


if __name__ == "__main__":
    setup() if "--setup" in sys.argv else main()
