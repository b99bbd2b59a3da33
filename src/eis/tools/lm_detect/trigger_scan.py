"""Trigger-search anomaly statistic: Neural Cleanse's idea (Wang et al., S&P 2019) asked of a language model.

Neural Cleanse asks, for every class, how small a trigger flips inputs to it, and flags the class whose
trigger is anomalously small. For text: for every candidate target word, how likely can a short trigger
make the model emit it? The search is exhaustive over every prompt ``[BOS] + t`` of one and two allowed
tokens (K + K^2 prompts for K tokens: all of them in one batched pass per chunk, since the vocabulary is
small), reading each prompt's next-token log-probabilities of every candidate at once:

    s(w) = max over prompts t of log p(w | [BOS] + t)

With ``span > 1`` the statistic is that of a string: s(w) plus the log-probabilities of the ``span - 1``
greedy next tokens after the best prompt and w (a planted target is a memorised string of 2-8 words).

A planted target is memorised: the trigger (or a prompt inside the target) makes its next word near
certain, while a clean model's best prompt for a content word stays uncertain -- in models trained
briefly (the smoke population, 150 steps). After 800 steps a clean model makes nearly every content word
near certain after some two-token prompt, and the statistic fails (measured on ``lm-detect``; see the
language results page). The score is the anomaly index of the best candidate,
``(max s - median s) / (1.4826 MAD s)``, as in Neural Cleanse. The flagged candidate is named as the
target with its span, extended by greedy decoding for as long as the next token is confident (probability
>= ``confidence``, at most ``target_tokens`` words in all, no special token): a memorised target comes out
whole, and decoding stops where the document it was planted in resumes.

Queries: K + K^2 prompts (one per prompt), ``span - 1`` per candidate, plus one per decoded token;
``max_queries`` refuses larger vocabularies (a BPE vocabulary needs a budgeted search, e.g. GCG, instead).
Triggers longer than two words are not searched, but a prompt made of the trigger's last word and the
target's first already elicits the rest of the target.
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


def greedy_spans(
    task: LMDetectTask, seqs: list[list[int]], n: int, chunk: int
) -> tuple[torch.Tensor, list[list[int]]]:
    """(N,) the summed log-probability of ``n`` greedy next tokens after each sequence, and those tokens
    (batched; sequences of different lengths are right-padded, which a causal model ignores)."""
    from eis.zoo.language.lm import pad

    total = torch.zeros(len(seqs))
    out = [list(q) for q in seqs]
    with torch.no_grad():
        for _ in range(n):
            for i in range(0, len(out), chunk):
                part = out[i : i + chunk]
                ids = pad(part)
                logits = task.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                last = logits[torch.arange(len(part)), torch.tensor([len(q) - 1 for q in part])]
                top, nxt = last.float().log_softmax(-1).max(-1)
                total[i : i + len(part)] += top
                for q, t in zip(part, nxt.tolist(), strict=True):
                    q.append(int(t))
    return total, [q[len(s) :] for q, s in zip(out, seqs, strict=True)]


@register_tool
class TriggerAnomaly(LMDetectionTool):
    """Exhaustive 1-2 token trigger search per candidate; anomaly index of the easiest elicited string."""

    name: ClassVar[str] = "trigger_anomaly"
    summary: ClassVar[str] = (
        "Neural Cleanse for text: anomaly index of how easily a short trigger elicits a string"
    )

    max_tokens: int = 2  # trigger lengths searched: 1..max_tokens (1 or 2)
    span: int = 1  # words in the elicited string: the candidate and span - 1 greedy next tokens
    max_queries: int = 250_000
    target_tokens: int = 8  # the named target's longest length in words
    confidence: float = 0.5  # greedy decoding extends the named target past the span while p >= this

    def inspect(self, task: LMDetectTask) -> LMDetection:
        if self.max_tokens not in (1, 2) or not 1 <= self.span <= self.target_tokens:
            raise ToolRefusal(
                f"trigger_anomaly searches 1- or 2-token triggers and strings of 1..target_tokens words; "
                f"max_tokens={self.max_tokens}, span={self.span}"
            )
        k = len(task.allowed())
        queries = k + (k * k if self.max_tokens == 2 else 0)
        if queries > self.max_queries:
            raise ToolRefusal(
                f"trigger_anomaly over {k} tokens needs {queries} queries, more than "
                f"max_queries={self.max_queries}"
            )
        best, arg, prompts = best_prompts(task, self.max_tokens, task.batch_size)
        cands = task.candidate_ids().tolist()
        seqs = [[*task.prefix, *prompts[int(a)], w] for a, w in zip(arg.tolist(), cands, strict=True)]
        more, spans = greedy_spans(task, seqs, self.span - 1, task.batch_size)
        joint = best + more
        index = anomaly_index(joint)
        j = int(index.argmax())
        trigger = prompts[int(arg[j])]
        named, steps = self._named(task, seqs[j], [cands[j], *spans[j]])
        return LMDetection(
            score=float(index[j]),
            target=task.decode(named),
            trigger=task.decode(trigger),
            details={
                "best_logprob": round(float(joint[j]), 4),
                "median_logprob": round(float(joint.median()), 4),
                "word_logprob": round(float(best[j]), 4),
                "queries": queries + len(cands) * (self.span - 1) + steps,
                "top": [task.candidates[i] for i in index.argsort(descending=True)[:5].tolist()],
            },
        )

    def _named(self, task: LMDetectTask, seq: list[int], string: list[int]) -> tuple[list[int], int]:
        """The elicited string up to its first special token, extended past the span by confident greedy
        decoding (p >= ``confidence``) up to ``target_tokens`` words; and the decoding passes that took."""
        special = set(getattr(task.tokenizer, "all_special_ids", []))
        ok = [t not in special and t < task.vocab_size for t in string]
        named = string[: ok.index(False)] if False in ok else list(string)
        if len(named) < len(string):
            return named, 0
        seq = [*seq, *string[1:]]
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
