"""Exact activation patching: ablate one component (or one edge) at a time and measure the metric."""

from __future__ import annotations

import torch

from eis.tools.base import register_tool
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool


def _one_off_effects(task: CircuitTask, n: int, kind: str, batch_size: int, skip_first: bool) -> torch.Tensor:
    """|metric(full) - metric(one part ablated)| for each of ``n`` parts, ``batch_size`` masks per pass."""
    with torch.no_grad():
        full = task.run()
        effects = []
        start = 1 if skip_first else 0
        masks = torch.ones(n - start, n)
        masks[torch.arange(n - start), torch.arange(start, n)] = 0
        for chunk in masks.split(max(1, batch_size)):
            kw = {"edge_mask": chunk} if kind == "edge" else {"node_mask": chunk}
            effects.append((full - task.run(**kw)).abs().cpu())
    return torch.cat(effects)


@register_tool
class ActivationPatching(CircuitTool):
    """Node-level activation patching (exact): each head and MLP ablated alone."""

    name = "activation_patching"
    summary = "exact node patching: metric change when each component alone is ablated"
    batch_size: int = 16  # ablated copies per forward pass

    def score(self, task: CircuitTask) -> CircuitScores:
        n_src = len(task.graph.sources)
        return CircuitScores.from_nodes(
            task.graph, _one_off_effects(task, n_src, "node", self.batch_size, True)
        )


@register_tool
class EdgePatching(CircuitTool):
    """Edge-level activation patching (exact): each edge ablated alone, everything else intact."""

    name = "edge_patching"
    summary = "exact edge patching: metric change when each edge alone is ablated"
    batch_size: int = 16

    def score(self, task: CircuitTask) -> CircuitScores:
        n = len(task.graph.edges)
        return CircuitScores.from_edges(task.graph, _one_off_effects(task, n, "edge", self.batch_size, False))
