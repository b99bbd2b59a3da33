"""ACDC (Conmy et al. 2023): greedy pruning of edges by how much the output diverges without them.

Destinations are visited from the logits backwards; for each, its incoming edges (latest source first)
are removed one at a time, and a removal stays when the divergence of the circuit's output from the full
model's grows by less than ``threshold``. The divergence is the squared L2 distance of the answer
positions' logits, averaged (Conmy et al. used L2 for the tracr tasks, whose logits are not calibrated
probabilities). The tool returns the chosen circuit and, as scores, each edge's divergence increase when
it was tested (kept edges score at least ``threshold``), which gives the ranking ROC-AUC needs. Edges
into a component that no longer reaches the logits are removed without a forward pass.
"""

from __future__ import annotations

import torch

from eis.tools.base import register_tool
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool
from eis.zoo.circuits.graph import patched_logits


@register_tool
class ACDC(CircuitTool):
    """Automatic circuit discovery: greedy edge pruning by output divergence."""

    name = "acdc"
    summary = "greedy edge pruning by output divergence (Conmy et al. 2023)"
    threshold: float = 1e-4

    def score(self, task: CircuitTask) -> CircuitScores:
        graph, model = task.graph, task.model
        answers = (task.labels >= 0).to(task.clean.device)
        with torch.no_grad():
            full = model(task.clean)

            def divergence(mask: torch.Tensor) -> float:
                logits = patched_logits(model, task.clean, task.ablated, edge_mask=mask)
                d = ((logits - full) ** 2).sum(-1)
                return float(d[answers].mean())

            n = len(graph.edges)
            kept = torch.ones(n, device=task.clean.device)
            scores = torch.zeros(n, dtype=torch.float64)
            current = divergence(kept)
            by_dest: dict[str, list[int]] = {}
            for i, (_, d) in enumerate(graph.edges):
                by_dest.setdefault(d, []).append(i)
            for dest in reversed(graph.destinations):
                comp = graph.component_of(dest)
                alive = dest == "logits" or any(
                    kept[i] > 0 for i, (s, _) in enumerate(graph.edges) if s == comp
                )
                for i in reversed(by_dest[dest]):
                    if not alive:
                        kept[i] = 0
                        continue
                    kept[i] = 0
                    trial = divergence(kept)
                    scores[i] = max(trial - current, 0.0)
                    if trial - current < self.threshold:
                        current = trial
                    else:
                        kept[i] = 1
        circuit = frozenset(e for e, k in zip(graph.edges, kept.tolist(), strict=True) if k > 0)
        return CircuitScores.from_edges(graph, scores, circuit)
