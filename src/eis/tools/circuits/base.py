"""The circuit-discovery contract: what a tool receives and what it returns, in one place.

A circuit tool receives a :class:`CircuitTask` and never the truth:

- ``model``: a :class:`~eis.zoo.circuits.model.HookedTransformer` (TransformerLens hook names and
  ``run_with_hooks`` / ``run_with_cache``);
- ``clean`` token sequences (N, pos) and ``corrupted`` ones paired with them (same lengths);
- ``labels`` (N, pos): the behaviour to explain, the model's answers (-1 where there is none);
- ``ablation``: how a removed component is replaced (``zero``, ``mean`` over the corrupted inputs, or
  ``resample`` from the paired corrupted input), the definition under which the circuit is sought;
- ``metric(logits)``: per input, the answer's logit minus the mean of the other logits, averaged over
  answer positions; the quantity a circuit must preserve.

It returns :class:`CircuitScores`: one importance per component (head or MLP, ``Graph.components``
order) and one per edge (``Graph.edges`` order), higher = more important, and optionally the circuit it
chose (a set of edges). Tools that score only nodes or only edges fill in the other with
:func:`edges_from_nodes` / :func:`nodes_from_edges`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import ClassVar

import torch

from eis.errors import EisError
from eis.tools.base import Tool
from eis.zoo.circuits.graph import ABLATIONS, Graph, ablated_outputs, patched_logits
from eis.zoo.circuits.model import HookedTransformer


def answer_metric(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,): answer logit minus the mean other logit, averaged over positions where ``labels >= 0``."""
    labels = labels.expand(logits.shape[:-1])
    valid = labels >= 0
    answer = logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    others = (logits.sum(-1) - answer) / (logits.shape[-1] - 1)
    diff = torch.where(valid, answer - others, torch.zeros_like(answer))
    return diff.sum(-1) / valid.sum(-1).clamp(min=1)


@dataclasses.dataclass
class CircuitTask:
    """What a circuit tool receives (see the module docstring)."""

    model: HookedTransformer
    clean: torch.Tensor
    corrupted: torch.Tensor
    labels: torch.Tensor
    ablation: str = "zero"

    def check(self) -> None:
        """Raise EisError (one line) on a malformed task."""
        if not isinstance(self.model, HookedTransformer):
            raise EisError(f"circuit tools need an eis HookedTransformer, got {type(self.model).__name__}")
        if self.ablation not in ABLATIONS:
            raise EisError(f"unknown ablation {self.ablation!r}; valid: {', '.join(ABLATIONS)}")
        if self.clean.dim() != 2 or self.clean.dtype != torch.long or self.clean.shape[0] == 0:
            raise EisError(
                f"clean tokens must be a non-empty (N, pos) int64 tensor, got {tuple(self.clean.shape)}"
            )
        for name in ("corrupted", "labels"):
            t = getattr(self, name)
            if t.shape != self.clean.shape or t.dtype != torch.long:
                raise EisError(
                    f"{name} must be int64 shaped like clean {tuple(self.clean.shape)}, got {tuple(t.shape)}"
                )
        cfg = self.model.cfg
        if self.clean.shape[1] > cfg.n_ctx:
            raise EisError(f"sequences of length {self.clean.shape[1]} exceed the model's n_ctx {cfg.n_ctx}")
        for name in ("clean", "corrupted"):
            t = getattr(self, name)
            if t.min() < 0 or t.max() >= cfg.d_vocab:
                raise EisError(
                    f"{name} tokens must lie in [0, {cfg.d_vocab}), got [{int(t.min())}, {int(t.max())}]"
                )
        if self.labels.max() >= cfg.d_vocab_out or not (self.labels >= 0).any():
            raise EisError(
                f"labels must be -1 or a class in [0, {cfg.d_vocab_out}), with at least one answer"
            )
        if self.model.training:
            raise EisError("the model is in train mode; call model.eval() first")

    @functools.cached_property
    def graph(self) -> Graph:
        return Graph.of(self.model)

    @functools.cached_property
    def ablated(self) -> torch.Tensor:
        """Each source's replacement output under ``ablation`` (see :func:`ablated_outputs`)."""
        with torch.no_grad():
            return ablated_outputs(self.model, self.clean, self.corrupted, self.ablation)

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-input metric; ``logits`` may carry leading mask-copy dimensions."""
        return answer_metric(logits, self.labels.to(logits.device))

    def run(
        self, *, edge_mask: torch.Tensor | None = None, node_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean metric with parts ablated (see :func:`patched_logits`); (k,) for k stacked masks."""
        logits = patched_logits(
            self.model, self.clean, self.ablated, edge_mask=edge_mask, node_mask=node_mask
        )
        return self.metric(logits).mean(-1)


@dataclasses.dataclass
class CircuitScores:
    """A tool's answer: node (component) and edge importances, and the circuit it chose, if any."""

    nodes: torch.Tensor  # (n_components,)
    edges: torch.Tensor  # (n_edges,)
    circuit: frozenset[tuple[str, str]] | None = None

    @staticmethod
    def from_nodes(graph: Graph, scores: Mapping[str, float] | torch.Tensor) -> CircuitScores:
        nodes = _vector(graph.components, scores)
        return CircuitScores(nodes, edges_from_nodes(graph, nodes))

    @staticmethod
    def from_edges(
        graph: Graph, scores: torch.Tensor, circuit: frozenset[tuple[str, str]] | None = None
    ) -> CircuitScores:
        edges = scores.detach().double().cpu()
        return CircuitScores(nodes_from_edges(graph, edges), edges, circuit)


def _vector(names: list[str], scores: Mapping[str, float] | torch.Tensor) -> torch.Tensor:
    if isinstance(scores, torch.Tensor):
        return scores.detach().double().cpu()
    return torch.tensor([float(scores[n]) for n in names], dtype=torch.float64)


def edges_from_nodes(graph: Graph, nodes: torch.Tensor) -> torch.Tensor:
    """Edge score = the smaller of its two endpoints' scores (``embed`` and ``logits`` rank above all)."""
    top = float(nodes.max()) + 1 if len(nodes) else 1.0
    score = {c: float(v) for c, v in zip(graph.components, nodes.tolist(), strict=True)}
    score |= {"embed": top, "logits": top}
    return torch.tensor(
        [min(score[s], score[graph.component_of(d)]) for s, d in graph.edges], dtype=torch.float64
    )


def nodes_from_edges(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """Node score = the largest score of an edge into or out of it."""
    best = dict.fromkeys(graph.components, 0.0)
    for (s, d), v in zip(graph.edges, edges.tolist(), strict=True):
        for c in (s, graph.component_of(d)):
            if c in best:
                best[c] = max(best[c], v)
    return torch.tensor([best[c] for c in graph.components], dtype=torch.float64)


class CircuitTool(Tool):
    """Base class of the ``circuits`` family: subclasses implement ``score``; callers call ``discover``."""

    family: ClassVar[str] = "circuits"

    def discover(self, task: CircuitTask) -> CircuitScores:
        """Check the task, then score it. Must not change the model's weights, mode or hooks."""
        task.check()
        return self.score(task)

    def score(self, task: CircuitTask) -> CircuitScores:
        raise NotImplementedError
