"""Universal adversarial triggers (Wallace et al. 2019, "Universal Adversarial Triggers for Attacking and
Analyzing NLP"): HotFlip's first-order token swaps (Ebrahimi et al. 2018), checked by queries in a
left-to-right beam search, as a trigger-recovery tool.

Each iteration takes one gradient of the target's loss with respect to the trigger's embeddings e_i. The
first-order change of the loss when position i's token becomes v is (E_v - e_i) . grad_i; the ``top_k``
tokens of least change are that position's candidates (the same ranking as the one-hot gradient GCG reads,
:func:`eis.tools.lm_trigger.gcg.token_gradients`). Then, position by position from the left, every beam
member with that position replaced by each candidate is scored exactly (one query per new trigger) and the
``beam`` best of the members and their swaps are kept. The iteration's best trigger becomes the current one;
a restart ends when an iteration brings no improvement, when the trigger emits the target, or after
``steps`` iterations. Where GCG samples a batch of single swaps at random positions, this search tries
every position's candidates in turn.

Restarts start from random allowed tokens and cycle through the lengths 1..``max_tokens`` (unless
``n_tokens`` fixes it) until the budget is spent; each restart's best trigger is submitted.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch

from eis.tools.base import register_tool
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked
from eis.tools.lm_trigger.gcg import token_gradients, with_best

Scored = tuple[tuple[int, ...], bool, float]  # trigger ids, emits, log-probability


@register_tool
class UAT(TriggerTool):
    """HotFlip token swaps from the embedding gradient, checked by queries in a beam search (Wallace 2019)."""

    name: ClassVar[str] = "uat"
    summary: ClassVar[str] = (
        "universal adversarial triggers: HotFlip swaps from the gradient, beam search by queries"
    )
    n_tokens: int | None = None  # trigger length (default: cycle 1..max_tokens)
    top_k: int = 16
    beam: int = 1
    steps: int = 20
    restarts: int = 64  # at most; the budget usually ends the run first
    seed: int = 0

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        lengths = task.lengths(self.n_tokens)
        allowed = task.allowed()
        banned = task.banned()
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[tuple[int, ...], tuple[bool, float]] = {}

        def key(s: Scored) -> tuple[bool, float]:
            return s[1], s[2]

        for restart in range(self.restarts):
            if not task.affords(2, partial(ranked, task, found)):
                return ranked(task, found)
            n = lengths[restart % len(lengths)]
            start = allowed[torch.randint(len(allowed), (n,), generator=gen)].tolist()
            (logp,), (hit,) = task.score([start])
            best: Scored = (tuple(start), bool(hit), float(logp))
            for _ in range(self.steps):
                if best[1]:
                    break
                if not task.affords(1, partial(ranked, task, with_best(found, best))):
                    return ranked(task, with_best(found, best))
                before = best
                grad = token_gradients(task, torch.tensor(best[0])).masked_fill(banned, float("inf"))
                top = (-grad).topk(min(self.top_k, len(allowed)), dim=1).indices  # (n, k)
                beam = [best]
                for i in range(n):
                    seen = {b[0] for b in beam}
                    swaps = [(*b[0][:i], t, *b[0][i + 1 :]) for b in beam for t in top[i].tolist()]
                    new = list(dict.fromkeys(s for s in swaps if s not in seen))
                    if not task.affords(len(new), partial(ranked, task, with_best(found, best))):
                        return ranked(task, with_best(found, best))
                    logps, hits = task.score([list(s) for s in new])
                    pool = beam + [(s, bool(h), float(lp)) for s, lp, h in zip(new, logps, hits, strict=True)]
                    beam = sorted(pool, key=key, reverse=True)[: self.beam]
                    if key(beam[0]) > key(best):
                        best = beam[0]
                if best == before:  # a fixed point of the search: restart
                    break
            found = with_best(found, best)
        return ranked(task, found)
