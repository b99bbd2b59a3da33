"""Greedy Coordinate Gradient (Zou et al. 2023, "Universal and Transferable Adversarial Attacks on Aligned
Language Models", Algorithm 1), as a trigger-recovery tool.

The trigger is ``n_tokens`` tokens x_1..x_n (all modifiable). The loss is the negative log-probability of
the target after ``[BOS] + trigger`` under teacher forcing. Each step:

1. the gradient of the loss with respect to the one-hot encoding of every trigger token (the trigger's
   embeddings are ``one_hot @ W_E``); for each position the ``top_k`` tokens with the most negative
   gradient are its candidate substitutions;
2. ``batch_size`` candidate triggers, each the current one with one position (drawn uniformly) replaced by
   one of that position's candidates (drawn uniformly);
3. the candidate of least loss (exactly evaluated, in one batched pass) becomes the current trigger.

A restart stops when greedy decoding after the current trigger emits the target (the paper's success
check), after ``steps`` steps, or when the task's budget is spent. The paper optimises a suffix of fixed
length; a trigger's length is unknown here, so unless ``n_tokens`` fixes it, restarts cycle through the
lengths 1..``max_tokens``, shortest first. Each restart starts from a trigger drawn uniformly from the
allowed tokens; its best trigger (least loss, ties to one that emits the target) is submitted. Queries: one
per gradient pass and one per evaluated candidate; duplicate candidates within a step are scored once.
Special tokens are never proposed.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F

from eis.tools.base import register_tool
from eis.tools.lm_hooks import run_with_hooks
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked


def token_gradients(task: TriggerTask, trigger: torch.Tensor) -> torch.Tensor:
    """(n, V) gradient of the target loss with respect to the one-hot encoding of ``trigger`` (n,): the
    trigger's embeddings at ``hook_embed`` are replaced by ``one_hot @ W_E``."""
    emb = task.model.get_input_embeddings().weight
    one_hot = F.one_hot(trigger, emb.shape[0]).to(emb.dtype).requires_grad_(True)
    ids = torch.tensor([*task.prefix, *trigger.tolist(), *task.target_ids], device=emb.device)[None]
    start, end = len(task.prefix), len(task.prefix) + len(trigger)

    def one_hot_trigger(embeds: torch.Tensor, _hook: str) -> torch.Tensor:
        return torch.cat([embeds[:, :start], (one_hot @ emb)[None], embeds[:, end:]], 1)

    with torch.enable_grad():
        logits = run_with_hooks(task.model, ids, [("hook_embed", one_hot_trigger)])[0]
        loss = F.cross_entropy(logits[end - 1 : ids.shape[1] - 1].float(), ids[0, end:])
        (grad,) = torch.autograd.grad(loss, one_hot)
    task.spend(1)
    return grad


@register_tool
class GCG(TriggerTool):
    """Greedy Coordinate Gradient over one-hot token gradients (Zou et al. 2023)."""

    name: ClassVar[str] = "gcg"
    summary: ClassVar[str] = "greedy coordinate gradient: top-k token swaps from one-hot gradients (Zou 2023)"
    n_tokens: int | None = None  # trigger length (default: the task's max_tokens)
    steps: int = 40
    top_k: int = 32
    batch_size: int = 64
    restarts: int = 4
    seed: int = 0

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        lengths = task.lengths(self.n_tokens)
        allowed = task.allowed()
        banned = task.banned()
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[tuple[int, ...], tuple[bool, float]] = {}
        for restart in range(self.restarts):
            if not task.affords(1 + self.batch_size, partial(ranked, task, found)):
                break
            n = lengths[restart % len(lengths)]
            current = allowed[torch.randint(len(allowed), (n,), generator=gen)]
            (logp,), (hit,) = task.score([current.tolist()])
            best = (tuple(current.tolist()), bool(hit), float(logp))
            for _ in range(self.steps):
                now = partial(ranked, task, with_best(found, best))
                if hit or not task.affords(1 + self.batch_size, now):
                    break
                grad = token_gradients(task, current).masked_fill(banned, float("inf"))
                top = (-grad).topk(min(self.top_k, len(allowed)), dim=1).indices  # (n, k)
                pos = torch.randint(n, (self.batch_size,), generator=gen)
                pick = torch.randint(top.shape[1], (self.batch_size,), generator=gen)
                cands = current.repeat(self.batch_size, 1)
                cands[torch.arange(self.batch_size), pos] = top[pos, pick]
                cands = torch.unique(cands, dim=0)  # sorted: the draw stays deterministic
                logps, hits = task.score(cands.tolist())
                i = int(logps.argmax())
                current, logp, hit = cands[i], float(logps[i]), bool(hits[i])
                if (hit, logp) > best[1:]:
                    best = (tuple(current.tolist()), hit, logp)
            found = with_best(found, best)
        return ranked(task, found)


def with_best(
    found: dict[tuple[int, ...], tuple[bool, float]], best: tuple[tuple[int, ...], bool, float]
) -> dict[tuple[int, ...], tuple[bool, float]]:
    """``found`` with a restart's ``best`` (ids, emits, log-prob) added, unless its ids are there already."""
    return {**found, best[0]: found.get(best[0], best[1:])}
