"""Trigger-search anomaly statistic: Neural Cleanse's idea (Wang et al., S&P 2019) asked of a language model.

Neural Cleanse asks, for every class, how small a trigger flips inputs to it, and flags the class whose
trigger is anomalously small. For text: for every candidate target word, how likely can a short trigger
make the model emit it? The search is exhaustive over every prompt ``[BOS] + t`` of one and two allowed
tokens (K + K^2 prompts for K tokens: all of them in one batched pass per chunk, since the vocabulary is
small), reading each prompt's next-token log-probabilities of every candidate at once:

    s(w) = max over prompts t of log p(w | [BOS] + t)

A planted target is a memorised string: the trigger (or a prompt inside the target) makes its next word
near certain, while a clean model's best prompt for a content word stays uncertain. The score is the
anomaly index of the best candidate, ``(max s - median s) / (1.4826 MAD s)``, as in Neural Cleanse. The
flagged candidate is named as the target, extended by greedy decoding from its best prompt for as long as
the next token is confident (probability >= ``confidence``, at most ``target_tokens`` words in all, no
special token): a memorised target comes out whole, and decoding stops where the document it was planted
in resumes.

Queries: K + K^2 prompts (one per prompt) plus one per decoded token; ``max_queries`` refuses larger
vocabularies (a BPE vocabulary needs a budgeted search, e.g. GCG, instead). Triggers longer than two words
are not searched, but a prompt made of the trigger's last word and the target's first already elicits the
rest of the target, so the statistic still sees them (measured on ``lm-detect``; see the language guide).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from eis.errors import ToolRefusal
from eis.tools.base import register_tool
from eis.tools.lm_detect.base import LMDetection, LMDetectionTool, LMDetectTask

MAD_SCALE = 1.4826  # MAD of a normal distribution, as Neural Cleanse uses


def best_prompts(
    task: LMDetectTask, max_tokens: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Per candidate: (C,) the best log-probability over every prompt of 1..``max_tokens`` allowed tokens,
    (C,) the index of that prompt, and the prompts (token ids, without ``[BOS]``)."""
    allowed, cands = task.allowed(), task.candidate_ids()
    k = len(allowed)
    grids = [allowed[:, None]]
    if max_tokens >= 2:
        grids.append(torch.stack([allowed.repeat_interleave(k), allowed.repeat(k)], 1))
    best = torch.full((len(cands),), -torch.inf)
    arg = torch.zeros(len(cands), dtype=torch.long)
    prompts: list[list[int]] = []
    prefix = torch.tensor(task.prefix, dtype=torch.long)
    with torch.no_grad():
        for grid in grids:
            for i in range(0, len(grid), chunk):
                rows = grid[i : i + chunk]
                ids = torch.cat([prefix.expand(len(rows), -1), rows], 1)
                logits = task.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
                logp = logits.float().log_softmax(-1)[:, cands]  # (n, C)
                top, where = logp.max(0)
                better = top > best
                best = torch.where(better, top, best)
                arg = torch.where(better, where + len(prompts), arg)
                prompts += rows.tolist()
    return best, arg, prompts


def anomaly_index(s: torch.Tensor) -> torch.Tensor:
    """(s - median) / (1.4826 MAD), per element (MAD floored at 1e-6)."""
    med = s.median()
    return (s - med) / (MAD_SCALE * (s - med).abs().median()).clamp_min(1e-6)


@register_tool
class TriggerAnomaly(LMDetectionTool):
    """Exhaustive 1-2 token trigger search per candidate target; anomaly index of the easiest target."""

    name: ClassVar[str] = "trigger_anomaly"
    summary: ClassVar[str] = (
        "Neural Cleanse for text: anomaly index of how easily a short trigger elicits a word"
    )

    max_tokens: int = 2  # trigger lengths searched: 1..max_tokens (1 or 2)
    max_queries: int = 250_000
    target_tokens: int = 8  # the named target's longest length in words
    confidence: float = 0.5  # greedy decoding extends the named target while p(next) >= this

    def inspect(self, task: LMDetectTask) -> LMDetection:
        if self.max_tokens not in (1, 2):
            raise ToolRefusal(
                f"trigger_anomaly searches 1- or 2-token triggers; max_tokens={self.max_tokens}"
            )
        k = len(task.allowed())
        queries = k + (k * k if self.max_tokens == 2 else 0)
        if queries > self.max_queries:
            raise ToolRefusal(
                f"trigger_anomaly over {k} tokens needs {queries} queries, more than "
                f"max_queries={self.max_queries}"
            )
        best, arg, prompts = best_prompts(task, self.max_tokens, task.batch_size)
        index = anomaly_index(best)
        j = int(index.argmax())
        trigger = prompts[int(arg[j])]
        word = int(task.candidate_ids()[j])
        named, steps = self._extend(task, trigger, word)
        return LMDetection(
            score=float(index[j]),
            target=task.decode(named),
            trigger=task.decode(trigger),
            details={
                "best_logprob": round(float(best[j]), 4),
                "median_logprob": round(float(best.median()), 4),
                "queries": queries + steps,
                "top": [task.candidates[i] for i in index.argsort(descending=True)[:5].tolist()],
            },
        )

    def _extend(self, task: LMDetectTask, trigger: list[int], word: int) -> tuple[list[int], int]:
        """The flagged word and its confident greedy continuation after ``[BOS] + trigger``, and the
        decoding passes that took."""
        special = set(getattr(task.tokenizer, "all_special_ids", []))
        seq = [*task.prefix, *trigger, word]
        named = [word]
        context = int(getattr(task.model.config, "n_positions", 0) or len(seq) + self.target_tokens)
        steps = 0
        with torch.no_grad():
            while len(named) < self.target_tokens and len(seq) < context:
                steps += 1
                probs = task.model(input_ids=torch.tensor([seq])).logits[0, -1].float().softmax(-1)
                p, nxt = probs.max(0)
                if float(p) < self.confidence or int(nxt) in special or int(nxt) >= task.vocab_size:
                    break
                seq.append(int(nxt))
                named.append(int(nxt))
        return named, steps
