"""The trigger-recovery contract (TDC 2023's trojan track): what a tool receives and returns.

A tool receives a :class:`TriggerTask`: a causal language model (a ``transformers`` model that takes
``input_ids`` or ``inputs_embeds`` and returns ``.logits``), its tokenizer, a target string, the longest
trigger it may submit (``max_tokens``), how many triggers it may submit (``n_candidates``) and a query
``budget``. It returns a :class:`TriggerAnswer`: up to ``n_candidates`` triggers, best first, and the
queries it used.

A *query* is one sequence through the model: scoring one prompt (forward), or one gradient pass over one
prompt. Every scored prompt goes through :meth:`TriggerTask.score`, which counts them, so a tool reports
what it spent without bookkeeping of its own; a gradient pass is counted with :meth:`TriggerTask.spend`.
Budgeted tools stop at ``budget``; the exhaustive-search control is the unbudgeted ceiling and says so.

**Traced runs.** A task with ``checkpoints`` (budgets below ``budget``) also records in ``trace`` the answer
the tool would have returned had the budget been each checkpoint, in the same run: a tool asks
:meth:`TriggerTask.affords` before spending and returns ``answer()`` when it is told no, so a run at budget
b is the traced run up to the first check that b fails, and that check records ``answer()``. A tool that
scores a budget's last partial batch instead cuts its batches with :meth:`TriggerTask.chunks` and calls
:meth:`TriggerTask.reached`. A run's path must depend on the budget through these calls only; the
family's contract check compares the trace with runs at those budgets.

A prompt is ``[BOS] + trigger`` (no BOS where the tokenizer has none); the model "emits the target" when
greedy decoding after the prompt yields exactly the target's tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import Tool
from eis.tools.lm_queries import QueryBudget, allowed_tokens


@dataclasses.dataclass
class TriggerTask(QueryBudget):
    """What a trigger-recovery tool receives (see the module docstring)."""

    model: nn.Module
    tokenizer: Any
    target: str
    max_tokens: int = 4
    n_candidates: int = 5
    budget: int = 4096
    batch_size: int = 1024
    queries: int = 0  # spent so far (counted by score and spend)
    checkpoints: tuple[int, ...] = ()  # budgets at which to record the answer in ``trace``
    trace: dict[int, TriggerAnswer] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        """Raise EisError (one line) on a malformed task."""
        if not isinstance(self.target, str) or not self.target.strip():
            raise EisError("the target must be a non-empty string")
        for key, low in (("max_tokens", 1), ("n_candidates", 1), ("budget", 1), ("batch_size", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise EisError(f"{key} must be an integer >= {low}, got {v!r}")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is not None and unk in self.target_ids:
            raise EisError(f"the target {self.target!r} holds words outside the tokenizer's vocabulary")
        if len(self.prefix) + self.max_tokens + len(self.target_ids) > self.context:
            raise EisError(f"a {self.max_tokens}-token trigger and the target do not fit the model's context")
        if self.model.training:
            raise EisError("the model is in train mode; call model.eval() first")
        if any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in self.checkpoints):
            raise EisError(f"checkpoints must be integers >= 0, got {self.checkpoints!r}")

    def affords(self, n: int, answer: Callable[[], TriggerAnswer]) -> bool:
        """Whether ``n`` more queries fit the budget; when not, the tool returns ``answer()`` without
        spending more. In a traced run, ``answer()`` is also recorded for every checkpoint these ``n``
        queries would pass first: a run at that budget stops here with that answer."""
        for b in self.checkpoints:
            if b not in self.trace and self.queries <= b < self.queries + n:
                self.trace[b] = answer()
        return self.queries + n <= self.budget

    def chunks(self, n: int) -> list[int]:
        """Sizes of consecutive :meth:`score` calls covering the next ``n`` queries, cut where the count
        reaches a checkpoint (one chunk in an untraced run)."""
        cuts = sorted({b - self.queries for b in self.checkpoints if 0 < b - self.queries < n} | {n})
        return [hi - lo for lo, hi in zip([0, *cuts], cuts, strict=False)]

    def reached(self, answer: Callable[[], TriggerAnswer]) -> None:
        """In a traced run, record ``answer()`` at the checkpoints the spent queries have reached (after a
        chunk of :meth:`chunks`, for a tool whose last batch at a smaller budget would be that chunk)."""
        for b in self.checkpoints:
            if b not in self.trace and b == self.queries:
                self.trace[b] = answer()

    @property
    def target_ids(self) -> list[int]:
        """The target's token ids (no special tokens)."""
        return list(self.tokenizer(self.target, add_special_tokens=False)["input_ids"])

    @property
    def prefix(self) -> list[int]:
        """What every prompt starts with: ``[BOS]`` where the tokenizer has one."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return [] if bos is None else [int(bos)]

    @property
    def context(self) -> int:
        return int(
            getattr(self.model.config, "n_positions", None) or self.model.config.max_position_embeddings
        )

    def allowed(self) -> torch.Tensor:
        """(K,) token ids a trigger may hold: the vocabulary less the tokenizer's special tokens."""
        return allowed_tokens(self.model, self.tokenizer)

    def banned(self) -> torch.Tensor:
        """(V,) bool over the model's embedding rows: True where a trigger may not hold the token (a
        gradient method masks these before picking swaps)."""
        banned = torch.ones(self.model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
        banned[self.allowed()] = False
        return banned

    def lengths(self, n_tokens: int | None) -> list[int]:
        """Trigger lengths a search tries: ``n_tokens`` (capped at ``max_tokens``), or 1..``max_tokens``."""
        return [min(n_tokens, self.max_tokens)] if n_tokens else list(range(1, self.max_tokens + 1))

    def score(self, triggers: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) log-probability of the target after each trigger and (N,) bool: whether greedy decoding
        emits it. Counts one query per trigger."""
        from eis.zoo.language.lm import target_scores

        if not triggers:
            return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        self.spend(len(triggers))
        return target_scores(
            self.model, [[*self.prefix, *t] for t in triggers], self.target_ids, batch_size=self.batch_size
        )

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))


@dataclasses.dataclass
class TriggerAnswer:
    """A tool's answer: ``triggers`` (strings, best first), their token ids, and the queries used."""

    triggers: list[str]
    token_ids: list[list[int]]
    queries: int
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def ranked(task: TriggerTask, found: dict[tuple[int, ...], tuple[bool, float]]) -> TriggerAnswer:
    """The task's answer from scored triggers (ids -> (emits, log-prob)), at most ``n_candidates``: the
    triggers that emit the target when any does (by log-probability, then shortest), else the most likely
    ones. Submitting only working triggers when there are some is what a TDC entrant would do (REASR
    averages over the submissions)."""
    best = sorted(found.items(), key=lambda kv: (not kv[1][0], -kv[1][1], len(kv[0]), kv[0]))
    if best and best[0][1][0]:
        best = [kv for kv in best if kv[1][0]]
    best = best[: task.n_candidates]
    return TriggerAnswer(
        [task.decode(list(ids)) for ids, _ in best],
        [list(ids) for ids, _ in best],
        task.queries,
        {"emits": [bool(v[0]) for _, v in best], "logprob": [round(float(v[1]), 4) for _, v in best]},
    )


class TriggerTool(Tool):
    """Base of the ``lm_trigger`` family: subclasses implement ``solve``; callers call ``recover``."""

    family: ClassVar[str] = "lm_trigger"

    def recover(self, task: TriggerTask) -> TriggerAnswer:
        """Check the task, then solve it (queries counted from zero). Must not change the model."""
        task.check()
        task.queries, task.trace = 0, {}
        answer = self.solve(task)
        if not isinstance(answer, TriggerAnswer):
            raise EisError(f"{self.name} returned {type(answer).__name__}, not a TriggerAnswer")
        for b in task.checkpoints:  # budgets the run never reached end where it ended
            if b not in task.trace and answer.queries <= b:
                task.trace[b] = answer
        task.trace = {b: task.trace[b] for b in sorted(task.trace) if b < task.budget}
        if len(answer.triggers) > task.n_candidates or any(
            not 1 <= len(t) <= task.max_tokens for t in answer.token_ids
        ):
            raise EisError(f"{self.name} submitted more than {task.n_candidates} triggers or one too long")
        return answer

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        raise NotImplementedError
