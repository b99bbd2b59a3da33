"""PEZ (Wen et al. 2023, "Hard Prompts Made Easy: Gradient-Based Discrete Optimization for Prompt Tuning
and Discovery", Algorithm 1), as a trigger-recovery tool.

A trigger of ``n`` tokens is kept as ``n`` continuous embeddings P. Each step projects every row of P to the
allowed token whose embedding is nearest in cosine similarity (P' = Proj(P)), runs the model on the
projected prompt ``[BOS] + P' + target``, takes the gradient of the target's negative log-probability with
respect to P' and applies it to P (AdamW). The forward pass is on hard tokens, so each step also scores
its projected trigger (log-probability, and whether greedy decoding emits the target) at no extra cost.

``chains`` triggers of one length are optimised together, from the embeddings of random allowed tokens;
a round ends after ``steps`` steps or when a projected trigger emits the target, and rounds cycle through
the lengths 1..``max_tokens`` (unless ``n_tokens`` fixes it) until the budget is spent. Every projected
trigger seen is a candidate; the best are submitted. Queries: one per chain per step (a gradient pass over
one prompt). The learning rate is in units of the embedding matrix's RMS coordinate, so it means the same
on models of any embedding scale.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F

from eis.tools.base import register_tool
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked
from eis.tools.lm_trigger.embeds import embedded_target_nll


@register_tool
class PEZ(TriggerTool):
    """Projected gradient descent on continuous trigger embeddings (Wen et al. 2023)."""

    name: ClassVar[str] = "pez"
    summary: ClassVar[str] = (
        "hard prompts made easy: embeddings updated by the gradient at their nearest tokens"
    )
    n_tokens: int | None = None  # trigger length (default: cycle 1..max_tokens)
    chains: int = 8
    steps: int = 64
    lr: float = 0.1  # AdamW step, in units of the embeddings' RMS coordinate
    weight_decay: float = 0.1
    rounds: int = 64  # at most; the budget usually ends the run first
    seed: int = 0

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        lengths = task.lengths(self.n_tokens)
        allowed = task.allowed()
        table = task.model.get_input_embeddings().weight.detach()
        vocab = table[allowed].float()  # (K, d)
        unit = F.normalize(vocab, dim=-1)
        scale = float(vocab.pow(2).mean().sqrt())
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[tuple[int, ...], tuple[bool, float]] = {}
        for r in range(self.rounds):
            n = lengths[r % len(lengths)]
            start = torch.randint(len(allowed), (self.chains, n), generator=gen)
            soft = vocab[start].clone().requires_grad_(True)  # P: (chains, n, d)
            opt = torch.optim.AdamW([soft], lr=self.lr * scale, weight_decay=self.weight_decay)
            for _ in range(self.steps):
                if not task.affords(self.chains, partial(ranked, task, found)):
                    return ranked(task, found)
                with torch.no_grad():
                    ids = allowed[(F.normalize(soft, dim=-1) @ unit.T).argmax(-1)]  # (chains, n)
                hard = table[ids].clone().requires_grad_(True)
                with torch.enable_grad():
                    nll, hits = embedded_target_nll(task, hard)
                    (grad,) = torch.autograd.grad(nll.sum(), hard)
                for row, lp, hit in zip(ids.tolist(), (-nll).tolist(), hits.tolist(), strict=True):
                    found.setdefault(tuple(row), (bool(hit), float(lp)))
                if bool(hits.any()):
                    break
                opt.zero_grad()
                soft.grad = grad.to(soft.dtype)
                opt.step()
        return ranked(task, found)
