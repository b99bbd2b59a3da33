"""Gradient approximations of patching: attribution patching (AtP, node level), EAP and EAP-IG (edges).

All three differentiate the metric with respect to a mask on the graph (1 = intact, 0 = ablated; see
:func:`eis.zoo.circuits.graph.patched_logits`). At mask 1 the derivative is the first-order estimate of
what ablating that part would do: ``(clean - ablated) . d metric / d activation``, i.e. AtP (Nanda 2023;
Kramár et al. 2024) for nodes and EAP (Syed et al. 2023) for edges. EAP-IG (Hanna et al. 2024, the
activation variant MIB uses) averages the derivative along the straight path from everything ablated to
everything intact, so that the scores add up to ``metric(full) - metric(all ablated)``.
"""

from __future__ import annotations

import torch

from eis.tools.base import register_tool
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool


def mask_gradient(task: CircuitTask, kind: str, levels: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """(len(levels), n): d mean-metric / d mask with every mask entry at each level, all levels in one
    batched pass; no parameter gradients are touched."""
    n = len(task.graph.edges) if kind == "edge" else len(task.graph.sources)
    mask = torch.tensor(levels, device=task.clean.device)[:, None].repeat(1, n).requires_grad_(True)
    kw = {"edge_mask": mask} if kind == "edge" else {"node_mask": mask}
    (grad,) = torch.autograd.grad(task.run(**kw).sum(), mask)
    return grad.detach().cpu()


@register_tool
class AttributionPatching(CircuitTool):
    """AtP: one forward and one backward pass estimate every component's patching effect."""

    name = "attribution_patching"
    summary = "AtP / node EAP: gradient estimate of each component's patching effect"

    def score(self, task: CircuitTask) -> CircuitScores:
        return CircuitScores.from_nodes(task.graph, mask_gradient(task, "node")[0, 1:].abs())


@register_tool
class EdgeAttributionPatching(CircuitTool):
    """EAP: the gradient estimate of each edge's patching effect."""

    name = "eap"
    summary = "edge attribution patching: gradient estimate of each edge's effect"

    def score(self, task: CircuitTask) -> CircuitScores:
        return CircuitScores.from_edges(task.graph, mask_gradient(task, "edge")[0].abs())


@register_tool
class EdgeAttributionPatchingIG(CircuitTool):
    """EAP-IG: edge gradients averaged over ``steps`` points from all-ablated to intact (midpoint rule)."""

    name = "eap_ig"
    summary = "EAP with integrated gradients along the ablated-to-clean path"
    steps: int = 8
    batch_size: int = 8  # path points per forward + backward pass

    def score(self, task: CircuitTask) -> CircuitScores:
        levels = [(i + 0.5) / self.steps for i in range(self.steps)]
        step = max(1, self.batch_size)
        grads = [
            mask_gradient(task, "edge", tuple(levels[i : i + step])) for i in range(0, len(levels), step)
        ]
        return CircuitScores.from_edges(task.graph, torch.cat(grads).mean(0).abs())
