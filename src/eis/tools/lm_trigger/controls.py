"""Controls for trigger recovery, run at the same query budget as the search methods:

- ``random_trigger_search``: triggers of 1 to ``max_tokens`` tokens drawn uniformly (length, then each
  token), scored in batches until the budget is spent or ``n_candidates`` of them emit the target (a
  budget that cuts a batch scores its first triggers);
- ``target_as_prompt``: the target itself (its first ``max_tokens`` tokens) submitted as the trigger; no
  query (a copy of the target is the cheapest guess, and the one that shows whether a metric rewards
  echoing the target);
- ``exhaustive_trigger_search``: every trigger of one and two tokens (the vocabulary is small), ranked by
  whether it emits the target, then by the target's log-probability. Unbudgeted: it is the ceiling a search
  method must beat in queries (K + K^2 for K allowed tokens); it refuses a vocabulary whose K^2 exceeds
  ``max_queries``.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch

from eis.errors import ToolRefusal
from eis.tools.base import register_tool
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked


@register_tool
class RandomTriggerSearch(TriggerTool):
    """Uniformly drawn triggers, scored up to the task's budget."""

    name: ClassVar[str] = "random_trigger_search"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "uniformly drawn triggers of 1..max_tokens tokens, scored up to the budget"
    batch: int = 256
    seed: int = 0

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        allowed = task.allowed()
        gen = torch.Generator().manual_seed(self.seed)
        found: dict[tuple[int, ...], tuple[bool, float]] = {}
        while task.left() and sum(v[0] for v in found.values()) < task.n_candidates:
            # a whole batch is drawn even where the budget cuts it, so a smaller budget scores a prefix
            lengths = torch.randint(1, task.max_tokens + 1, (self.batch,), generator=gen).tolist()
            tokens = allowed[torch.randint(len(allowed), (self.batch, task.max_tokens), generator=gen)]
            trigs = [tokens[i, :k].tolist() for i, k in enumerate(lengths)][: task.left()]
            for size in task.chunks(len(trigs)):
                chunk, trigs = trigs[:size], trigs[size:]
                logps, hits = task.score(chunk)
                for t, lp, h in zip(chunk, logps.tolist(), hits.tolist(), strict=True):
                    found[tuple(t)] = (bool(h), float(lp))
                task.reached(partial(ranked, task, found))
            if len(found) > 4 * task.n_candidates:  # keep the best few only
                keep = ranked(task, found)
                kept = zip(keep.token_ids, keep.details["emits"], keep.details["logprob"], strict=True)
                found = {tuple(i): (e, lp) for i, e, lp in kept}
        return ranked(task, found)


@register_tool
class TargetAsPrompt(TriggerTool):
    """The target itself as the trigger (no query)."""

    name: ClassVar[str] = "target_as_prompt"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "submit the target's own first tokens as the trigger (no query)"

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        ids = task.target_ids[: task.max_tokens]
        return TriggerAnswer([task.decode(ids)], [ids], 0)


@register_tool
class ExhaustiveTriggerSearch(TriggerTool):
    """Every one- and two-token trigger, ranked by emitting the target, then by its log-probability."""

    name: ClassVar[str] = "exhaustive_trigger_search"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "every 1- and 2-token trigger (K + K^2 queries): the unbudgeted ceiling"
    max_queries: int = 250_000

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        allowed = task.allowed().tolist()
        k = len(allowed)
        if k + k * k > self.max_queries:
            raise ToolRefusal(
                f"exhaustive search over {k} tokens needs {k + k * k} queries, more than max_queries="
                f"{self.max_queries}"
            )
        trigs = [[a] for a in allowed] + [[a, b] for a in allowed for b in allowed]
        if task.max_tokens < 2:
            trigs = trigs[:k]
        found: dict[tuple[int, ...], tuple[bool, float]] = {}
        logps, hits = task.score(trigs)
        order = sorted(range(len(trigs)), key=lambda i: (not bool(hits[i]), -float(logps[i])))
        for i in order[: task.n_candidates]:
            found[tuple(trigs[i])] = (bool(hits[i]), float(logps[i]))
        return ranked(task, found)
