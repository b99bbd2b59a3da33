"""Controls for circuit discovery: a random ranking, a weight-norm ranking and the "everything" circuit.

A discovery method is only worth its cost where it beats these. The weight-norm ranking finds compiled
circuits outright (unused components have all-zero weights) and must fail on the realistic variants,
whose distractor components carry weights of the same norms.
"""

from __future__ import annotations

import torch

from eis.tools.base import register_tool
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool


@register_tool
class RandomCircuit(CircuitTool):
    """Uniformly random node and edge scores (seeded)."""

    name = "random_circuit"
    control = True
    summary = "random node and edge scores"
    seed: int = 0

    def score(self, task: CircuitTask) -> CircuitScores:
        # a different draw per task (tokens and ablation), the same for the same task and seed
        tokens = task.clean.detach().cpu().flatten()
        mix = int((tokens * torch.arange(1, len(tokens) + 1)).sum()) + sum(map(ord, task.ablation))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + mix)
        graph = task.graph
        nodes = torch.rand(len(graph.components), generator=g, dtype=torch.float64)
        edges = torch.rand(len(graph.edges), generator=g, dtype=torch.float64)
        return CircuitScores(nodes, edges)


@register_tool
class WeightNorm(CircuitTool):
    """Frobenius norm of each component's weights; an edge scores its endpoints' norms multiplied."""

    name = "weight_norm"
    control = True
    summary = "rank components by the norm of their weights"

    def score(self, task: CircuitTask) -> CircuitScores:
        m, graph = task.model, task.graph
        with torch.no_grad():
            src = {"embed": torch.cat([m.embed.W_E, m.pos_embed.W_pos]).norm().item()}
            dst = {"logits": m.unembed.W_U.norm().item()}
            for layer, block in enumerate(m.blocks):
                a, mlp = block.attn, block.mlp
                for h in range(m.cfg.n_heads):
                    node = f"a{layer}.h{h}"
                    parts = {
                        x: w[h].norm().item()
                        for x, w in zip("qkvo", (a.W_Q, a.W_K, a.W_V, a.W_O), strict=True)
                    }
                    src[node] = sum(v**2 for v in parts.values()) ** 0.5
                    dst |= {f"{node}.{x}": parts[x] for x in "qkv"}
                w_in = torch.cat([mlp.W_in, mlp.b_in[None]]).norm().item()
                w_out = torch.cat([mlp.W_out, mlp.b_out[None]]).norm().item()
                src[f"m{layer}"], dst[f"m{layer}"] = (w_in**2 + w_out**2) ** 0.5, w_in
        nodes = torch.tensor([src[c] for c in graph.components], dtype=torch.float64)
        edges = torch.tensor([src[s] * dst[d] for s, d in graph.edges], dtype=torch.float64)
        return CircuitScores(nodes, edges)


@register_tool
class Everything(CircuitTool):
    """The whole model as the circuit: every node and edge scores 1."""

    name = "everything"
    control = True
    summary = "the whole model: every node and edge in the circuit"

    def score(self, task: CircuitTask) -> CircuitScores:
        graph = task.graph
        return CircuitScores(
            torch.ones(len(graph.components), dtype=torch.float64),
            torch.ones(len(graph.edges), dtype=torch.float64),
            frozenset(graph.edges),
        )
