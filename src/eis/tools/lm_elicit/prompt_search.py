"""Elicitation by prompt search: a short prefix, put before every prompt, that makes the model answer.

- ``prompt_search``: greedy search, one token at a time: every allowed token appended to the current
  prefix is scored on the labelled examples by the mean log-probability of their answers (ties: more
  answers right), and the best one is kept while it improves on the current prefix; at most
  ``max_prefix_tokens`` tokens, stopping when the budget cannot pay for another candidate. Candidates are
  tried in a seeded order, so a budget that ends a round early scores a seeded subset.
- ``random_prefix_search`` (control): prefixes of 1 to ``max_prefix_tokens`` uniformly drawn tokens, as
  many as the budget pays for, the best by the same score.

Queries: one per labelled example per scored prefix (the empty prefix included).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from eis.tools.base import register_tool
from eis.tools.lm_elicit.base import Elicitation, ElicitTask, ElicitTool


def _best(task: ElicitTask, prefixes: list[list[int]]) -> tuple[tuple[float, float], list[int]]:
    """The best of ``prefixes`` by (mean log-probability, accuracy), scored in one batch."""
    logp, acc = task.score_prefixes(prefixes)
    i = max(range(len(prefixes)), key=lambda j: (float(logp[j]), float(acc[j]), -j))
    return (float(logp[i]), float(acc[i])), prefixes[i]


@register_tool
class PromptSearch(ElicitTool):
    """Greedy token-by-token prefix search on the labelled examples."""

    name: ClassVar[str] = "prompt_search"
    summary: ClassVar[str] = "greedy token-by-token prefix search on the labelled answers' log-probability"
    seed: int = 0

    def solve(self, task: ElicitTask) -> Elicitation:
        gen = torch.Generator().manual_seed(self.seed)
        allowed = task.allowed()
        n = len(task.prompts)
        prefix: list[int] = []
        best = _best(task, [prefix])[0]
        while len(prefix) < task.max_prefix_tokens and task.left() >= n:
            order = allowed[torch.randperm(len(allowed), generator=gen)].tolist()
            cands = [[*prefix, t] for t in order[: task.left() // n]]
            value, cand = _best(task, cands)
            if value <= best:
                break
            best, prefix = value, cand
        return Elicitation(prefix=prefix, details={"logprob": round(best[0], 4), "accuracy": best[1]})


@register_tool
class RandomPrefixSearch(ElicitTool):
    """Uniformly drawn prefixes at the same budget, the best kept."""

    name: ClassVar[str] = "random_prefix_search"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "random prefixes of 1..max tokens at the same budget, best kept (control)"
    seed: int = 0

    def solve(self, task: ElicitTask) -> Elicitation:
        gen = torch.Generator().manual_seed(self.seed)
        allowed = task.allowed()
        m = task.left() // len(task.prompts)
        if not task.max_prefix_tokens or not m:
            return Elicitation()
        lengths = torch.randint(1, task.max_prefix_tokens + 1, (m,), generator=gen).tolist()
        tokens = allowed[torch.randint(len(allowed), (m, task.max_prefix_tokens), generator=gen)]
        value, prefix = _best(task, [tokens[i, :k].tolist() for i, k in enumerate(lengths)])
        return Elicitation(prefix=prefix, details={"logprob": round(value[0], 4), "accuracy": value[1]})
