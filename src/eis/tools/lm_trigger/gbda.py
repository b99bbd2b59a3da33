"""GBDA (Guo et al. 2021, "Gradient-based Adversarial Attacks against Text Transformers"), as a
trigger-recovery tool: a distribution over triggers optimised by gradient, then sampled.

A trigger of ``n`` tokens is a matrix of logits Theta (n x K over the K allowed tokens). Each step draws
``samples`` Gumbel-softmax relaxations of it (softmax((Theta + g) / ``tau``), g Gumbel noise), feeds each
as the trigger's input embeddings (the relaxed one-hot times the embedding matrix), and takes an Adam step
on Theta against the target's mean negative log-probability. The paper's fluency and similarity
constraints are left out: a trigger need only make the model emit the target.

After every step the distribution is read out as hard triggers, scored by queries: its argmax, and every
``eval_every`` steps also ``draws`` samples (drawn per position). A round ends after ``steps`` steps or
when one emits the target; rounds cycle through the lengths 1..``max_tokens`` (unless ``n_tokens`` fixes
it) from Theta = 0 until the budget is spent. Every scored trigger is a candidate; the best are submitted.
Queries: one per relaxed sample per step (a gradient pass over one prompt) and one per new hard trigger.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch

from eis.tools.base import register_tool
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked
from eis.tools.lm_trigger.embeds import embedded_target_nll


@register_tool
class GBDA(TriggerTool):
    """A Gumbel-softmax distribution over trigger tokens, optimised by gradient (Guo et al. 2021)."""

    name: ClassVar[str] = "gbda"
    summary: ClassVar[str] = "Gumbel-softmax distribution over trigger tokens, optimised by gradient, sampled"
    n_tokens: int | None = None  # trigger length (default: cycle 1..max_tokens)
    samples: int = 8  # relaxed samples per step
    steps: int = 64
    lr: float = 0.3
    tau: float = 1.0
    eval_every: int = 8
    draws: int = 8  # hard samples scored with the argmax every eval_every steps
    rounds: int = 64  # at most; the budget usually ends the run first
    seed: int = 0

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        lengths = task.lengths(self.n_tokens)
        allowed = task.allowed()
        vocab = task.model.get_input_embeddings().weight.detach()[allowed]  # (K, d)
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[tuple[int, ...], tuple[bool, float]] = {}
        for r in range(self.rounds):
            n = lengths[r % len(lengths)]
            theta = torch.zeros(n, len(allowed), requires_grad=True)
            opt = torch.optim.Adam([theta], lr=self.lr)
            for step in range(self.steps):
                if not task.affords(self.samples, partial(ranked, task, found)):
                    return ranked(task, found)
                u = torch.rand((self.samples, n, len(allowed)), generator=gen).clamp(1e-20, 1.0)
                gumbel = -torch.log((-torch.log(u)).clamp_min(1e-20))
                with torch.enable_grad():
                    coeffs = ((theta + gumbel) / self.tau).softmax(-1)
                    nll, _ = embedded_target_nll(task, coeffs @ vocab.to(coeffs.dtype))
                    (grad,) = torch.autograd.grad(nll.mean(), theta)  # the model's weights get no .grad
                opt.zero_grad()
                theta.grad = grad
                opt.step()
                with torch.no_grad():
                    rows = [theta.argmax(-1).tolist()]
                    if (step + 1) % self.eval_every == 0 or step + 1 == self.steps:
                        picks = torch.multinomial(theta.softmax(-1), self.draws, True, generator=gen)
                        rows += picks.T.tolist()
                fresh = list(dict.fromkeys(tuple(allowed[row].tolist()) for row in rows))
                cands = [list(c) for c in fresh if c not in found]  # a trigger scored before is known
                if not task.affords(len(cands), partial(ranked, task, found)):
                    return ranked(task, found)
                logps, hits = task.score(cands)
                for c, lp, hit in zip(cands, logps.tolist(), hits.tolist(), strict=True):
                    found[tuple(c)] = (bool(hit), float(lp))
                if any(found[c][0] for c in fresh):
                    break
        return ranked(task, found)
