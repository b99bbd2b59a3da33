"""Ground truth of a compiled program's circuit: read from the weights, confirmed by ablation.

- :func:`structural_circuit` reads tracr's one-hot, labelled residual basis: a component is used when its
  weights are non-zero; an edge (source -> destination) exists when the residual dimensions the source
  writes overlap those the destination reads.
- :func:`ablation_circuit` is the truth the track scores against: the components and edges whose
  ablation *alone* (zero, mean or resample, the case's choice) changes the model's logits at an answer
  position by more than ``tol`` on the case's inputs. It differs between ablation types (with resample
  ablation on same-length inputs, reverse's length sub-circuit never matters) and works on rotated and
  distractor variants too, where the weights no longer show the circuit.
"""

from __future__ import annotations

import torch

from eis.zoo.circuits.graph import Graph, ablated_outputs, patched_logits
from eis.zoo.circuits.model import HookedTransformer

TOL = 1e-3


def _nonzero_rows(m: torch.Tensor) -> set[int]:
    return set(torch.nonzero(m.abs().sum(-1) > 0).flatten().tolist())


def structural_circuit(model: HookedTransformer) -> tuple[set[str], set[tuple[str, str]]]:
    """Components and edges of a compiled model in its original one-hot basis, from the weights alone."""
    graph, cfg = Graph.of(model), model.cfg
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    writes = {"embed": _nonzero_rows(torch.cat([sd["embed.W_E"], sd["pos_embed.W_pos"]]).T)}
    reads = {"logits": _nonzero_rows(sd["unembed.W_U"])}
    used = set()
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        for h in range(cfg.n_heads):
            node = f"a{layer}.h{h}"
            ov = sd[f"{p}.attn.W_V"][h] @ sd[f"{p}.attn.W_O"][h]
            qk = sd[f"{p}.attn.W_Q"][h] @ sd[f"{p}.attn.W_K"][h].T
            writes[node] = _nonzero_rows(ov.T)
            reads[f"{node}.q"], reads[f"{node}.k"], reads[f"{node}.v"] = (
                _nonzero_rows(qk), _nonzero_rows(qk.T), _nonzero_rows(ov),
            )  # fmt: skip
            if ov.any() and qk.any():
                used.add(node)
        w_in, w_out, b_out = sd[f"{p}.mlp.W_in"], sd[f"{p}.mlp.W_out"], sd[f"{p}.mlp.b_out"]
        writes[f"m{layer}"] = _nonzero_rows(torch.cat([w_out, b_out[None]]).T)
        reads[f"m{layer}"] = _nonzero_rows(w_in)
        if w_in.any() and (w_out.any() or b_out.any()):
            used.add(f"m{layer}")
    edges = {
        (s, d) for s, d in graph.edges if writes[s] & reads[d] and graph.component_of(s) in used | {"embed"}
    }
    edges = {(s, d) for s, d in edges if graph.component_of(d) in used | {"logits"}}
    return used, edges


def answer_mask(tokens: torch.Tensor, pad_id: int, first: int = 1) -> torch.Tensor:
    """(batch, pos) bool: positions whose output is defined (not BOS, not padding, not before ``first``)."""
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
    return (tokens != pad_id) & (pos >= first)


def ablation_circuit(
    model: HookedTransformer,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    ablation: str,
    answers: torch.Tensor,
    *,
    tol: float = TOL,
) -> tuple[set[str], set[tuple[str, str]], dict[str, float]]:
    """Components and edges whose ablation alone moves an answer logit by more than ``tol``; and effects.

    Runs one forward pass per component and per edge, batched as masked copies of the inputs.
    """
    graph = Graph.of(model)
    with torch.no_grad():
        ablated = ablated_outputs(model, clean, corrupted, ablation)
        full = model(clean)

        def effects(masks: torch.Tensor, kind: str) -> torch.Tensor:
            out = []
            for chunk in masks.split(16):
                kw = {"edge_mask": chunk} if kind == "edge" else {"node_mask": chunk}
                logits = patched_logits(model, clean, ablated, **kw)
                delta = (logits - full[None]).abs().amax(-1)  # (k, batch, pos)
                out.append(torch.where(answers[None], delta, torch.zeros_like(delta)).flatten(1).amax(1))
            return torch.cat(out)

        n_src = len(graph.sources)
        node_masks = torch.ones(n_src - 1, n_src)
        node_masks[torch.arange(n_src - 1), torch.arange(1, n_src)] = 0
        node_eff = effects(node_masks, "node")
        edge_eff = effects(1 - torch.eye(len(graph.edges)), "edge")
    nodes = {c for c, e in zip(graph.components, node_eff.tolist(), strict=True) if e > tol}
    edges = {edge for edge, e in zip(graph.edges, edge_eff.tolist(), strict=True) if e > tol}
    measured = {f"node {c}": round(e, 6) for c, e in zip(graph.components, node_eff.tolist(), strict=True)}
    return nodes, edges, measured
