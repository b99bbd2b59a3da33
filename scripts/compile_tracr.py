"""Compile the built-in tracr programs into the weights and metadata shipped in eis.zoo.circuits.data.

Needs the optional extra: ``pip install -c constraints.txt -e '.[tracr]'`` (jax + tracr). Run from the
repository root::

    python scripts/compile_tracr.py            # writes src/eis/zoo/circuits/data/<program>.{safetensors,json}
    python scripts/compile_tracr.py reverse    # one program

Weights are stored in the layout of :class:`eis.zoo.circuits.model.HookedTransformer` (float32, tracr's
one-hot residual basis, labelled in the JSON). Every program's compiled weights are checked here against
the RASP program itself on random inputs, so the shipped labels (the model's own outputs) are the
program's outputs.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "src" / "eis" / "zoo" / "circuits" / "data"
BOS, PAD = "BOS", "PAD"
CHECK_INPUTS = 200


def programs() -> dict[str, dict[str, Any]]:
    """Name -> RASP program factory, vocabulary, max length and whether inputs need distinct tokens."""
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return {
        "reverse": {"make": lambda: lib.make_reverse(rasp.tokens), "vocab": ["a", "b", "c"], "n_ctx": 5},
        "hist": {"make": lib.make_hist, "vocab": ["a", "b", "c"], "n_ctx": 5},
        "sort_unique": {
            "make": lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
            "vocab": [1, 2, 3, 4, 5, 6],
            "n_ctx": 5,
            "distinct": True,
        },
        "detect_pattern": {
            "make": lambda: lib.detect_pattern(rasp.tokens, "abc"),
            "vocab": ["a", "b", "c"],
            "n_ctx": 5,
            "undefined_prefix": 2,  # the output is None before a whole pattern fits
        },
    }


def compile_program(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights (HookedTransformer layout) and the JSON metadata of one built-in program."""
    from tracr.compiler import compiling
    from tracr.rasp import rasp

    entry = programs()[name]
    # tracr numbers expressions from a global counter, and the numbers end up in the residual labels
    # (whose sorted order is the residual basis): restart it so every compile is reproducible
    rasp.RASPExpr._ids = itertools.count(1)
    prog, vocab, n_ctx = entry["make"](), entry["vocab"], entry["n_ctx"]
    m = compiling.compile_rasp_to_model(
        prog, vocab=set(vocab), max_seq_len=n_ctx, compiler_bos=BOS, compiler_pad=PAD
    )
    p = {k: {kk: np.array(vv, dtype=np.float32) for kk, vv in v.items()} for k, v in m.params.items()}
    cfg = m.model_config
    n_layers, n_heads, d_head = cfg.num_layers, cfg.num_heads, cfg.key_size
    labels = list(m.residual_labels)
    d_model = len(labels)
    out_label = prog.label
    out_dims = [i for i, lab in enumerate(labels) if lab.split(":")[0] == out_label]
    out_values = [labels[i].split(":", 1)[1] for i in out_dims]
    w: dict[str, np.ndarray] = {
        "embed.W_E": p["token_embed"]["embeddings"],
        "pos_embed.W_pos": p["pos_embed"]["embeddings"],
    }
    for layer in range(n_layers):
        pre = f"transformer/layer_{layer}"
        for tr, ours in (("query", "W_Q"), ("key", "W_K"), ("value", "W_V")):
            lin = p[f"{pre}/attn/{tr}"]
            assert not lin["b"].any(), f"{name}: tracr attention {tr} bias is not zero"
            w[f"blocks.{layer}.attn.{ours}"] = lin["w"].reshape(d_model, n_heads, d_head).transpose(1, 0, 2)
        lin = p[f"{pre}/attn/linear"]
        assert not lin["b"].any(), f"{name}: tracr attention output bias is not zero"
        w[f"blocks.{layer}.attn.W_O"] = lin["w"].reshape(n_heads, d_head, d_model)
        w[f"blocks.{layer}.mlp.W_in"] = p[f"{pre}/mlp/linear_1"]["w"]
        w[f"blocks.{layer}.mlp.b_in"] = p[f"{pre}/mlp/linear_1"]["b"]
        w[f"blocks.{layer}.mlp.W_out"] = p[f"{pre}/mlp/linear_2"]["w"]
        w[f"blocks.{layer}.mlp.b_out"] = p[f"{pre}/mlp/linear_2"]["b"]
    w_u = np.zeros((d_model, len(out_dims)), dtype=np.float32)
    w_u[out_dims, np.arange(len(out_dims))] = 1.0
    w["unembed.W_U"] = w_u
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
    in_map = {str(k): int(v) for k, v in m.input_encoder.encoding_map.items()}
    meta = {
        "program": name,
        "vocab": [str(v) for v in vocab],
        "distinct": bool(entry.get("distinct", False)),
        "undefined_prefix": int(entry.get("undefined_prefix", 0)),
        "bos": BOS,
        "pad": PAD,
        "input_encoding": in_map,
        "output_values": out_values,
        "output_label": out_label,
        "residual_labels": labels,
        "config": {
            "n_layers": n_layers, "n_heads": n_heads, "d_model": d_model, "d_head": d_head,
            "d_mlp": cfg.mlp_hidden_size, "n_ctx": n_ctx + 1, "d_vocab": len(in_map),
            "d_vocab_out": len(out_dims), "pad_id": in_map[PAD], "bos_id": in_map[BOS],
        },
    }  # fmt: skip
    _check_against_rasp(prog, tensors, meta, entry)
    return tensors, meta


def _check_against_rasp(
    prog: Any, tensors: dict[str, torch.Tensor], meta: dict[str, Any], entry: dict
) -> None:
    """The torch model's argmax equals the RASP program's output on random inputs of every length."""
    from tracr.rasp import rasp

    from eis.zoo.circuits.model import HookedTransformer, ModelConfig

    model = HookedTransformer(ModelConfig(**meta["config"]))
    model.load_state_dict(tensors)
    rng = random.Random(0)
    vocab, n = entry["vocab"], entry["n_ctx"]
    for _ in range(CHECK_INPUTS):
        length = rng.randint(1, n)
        seq = (
            rng.sample(vocab, length) if entry.get("distinct") else [rng.choice(vocab) for _ in range(length)]
        )
        want = rasp.evaluate(prog, seq)
        ids = [meta["input_encoding"][BOS]] + [meta["input_encoding"][str(t)] for t in seq]
        ids += [meta["config"]["pad_id"]] * (n - length)
        got = model(torch.tensor([ids])).argmax(-1)[0, 1 : length + 1].tolist()
        for i, (g, w_) in enumerate(zip(got, want, strict=True)):
            assert (w_ is None) == (i < meta["undefined_prefix"]), f"{meta['program']}: None at {i}"
            if w_ is not None:
                assert meta["output_values"][g] == str(w_), f"{meta['program']}: {seq} -> {got}, RASP {want}"


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(programs()):
        tensors, meta = compile_program(name)
        save_file(tensors, str(OUT / f"{name}.safetensors"))
        (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{name}: {meta['config']}")


if __name__ == "__main__":
    main(sys.argv[1:])
