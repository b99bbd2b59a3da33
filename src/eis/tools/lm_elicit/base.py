"""The elicitation contract: recover a password-locked capability without the password.

A tool receives an :class:`ElicitTask`: a causal language model (a ``transformers`` model returning
``.logits``; the steering tool needs the GPT-2 layout of :mod:`eis.tools.lm_hooks`), its tokenizer, a few
labelled examples of the capability (prompt texts and their one-word answers), as many unrelated texts of
the language (what the control fine-tunes on), the longest prefix it may submit and a query ``budget``. It
never sees the password. It returns an :class:`Elicitation`, a change to how the model is asked, applied
the same way to every prompt by :func:`answer_scores`:

- ``model``: a changed copy of the model (fine-tuning), or None for the task's own model;
- ``prefix``: token ids put right after ``[BOS]`` (before the prompt) of every prompt (prompt search);
- ``steering``: hook name -> (d_model,) vector added to that activation at every position (activation
  steering, through :mod:`eis.tools.lm_hooks`).

A *query* is one sequence through the model: one scored prompt, or one example in one fine-tuning step
(forward and backward). :meth:`ElicitTask.score` counts its queries; a tool counts the others with
:meth:`ElicitTask.spend`. The model answers a prompt with the argmax of its next-token logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import Tool
from eis.tools.lm_queries import QueryBudget, allowed_tokens


@dataclasses.dataclass
class Elicitation:
    """A tool's answer (see the module docstring) and the queries it used."""

    model: nn.Module | None = None
    prefix: list[int] = dataclasses.field(default_factory=list)
    steering: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    queries: int = 0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ElicitTask(QueryBudget):
    """What an elicitation tool receives (see the module docstring)."""

    model: nn.Module
    tokenizer: Any
    prompts: list[str]
    answers: list[str]
    texts: list[str]
    max_prefix_tokens: int = 4
    budget: int = 8192
    batch_size: int = 512
    queries: int = 0  # spent so far

    def check(self) -> None:
        """Raise EisError (one line) on a malformed task."""
        if not self.prompts or len(self.prompts) != len(self.answers):
            raise EisError(
                f"an elicitation task needs labelled examples: {len(self.prompts)} prompts for "
                f"{len(self.answers)} answers"
            )
        for key, low in (("max_prefix_tokens", 0), ("budget", 1), ("batch_size", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise EisError(f"{key} must be an integer >= {low}, got {v!r}")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for text in [*self.prompts, *self.texts]:
            if not text.strip() or (unk is not None and unk in self._encode(text)):
                raise EisError(f"the text {text[:40]!r} is empty or holds words outside the vocabulary")
        for answer in self.answers:
            ids = self._encode(answer)
            if len(ids) != 1 or (unk is not None and ids[0] == unk):
                raise EisError(f"an answer must be one word of the vocabulary, got {answer!r}")
        if self.model.training:
            raise EisError("the model is in train mode; call model.eval() first")

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def bos(self) -> list[int]:
        """What every prompt starts with: ``[BOS]`` where the tokenizer has one."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return [] if bos is None else [int(bos)]

    @property
    def prompt_ids(self) -> list[list[int]]:
        """The labelled prompts' token ids, ``[BOS]`` first."""
        return [[*self.bos, *self._encode(p)] for p in self.prompts]

    @property
    def answer_ids(self) -> list[int]:
        """The labelled answers' token ids."""
        return [self._encode(a)[0] for a in self.answers]

    @property
    def text_ids(self) -> list[list[int]]:
        """The unrelated texts' token ids, ``[BOS]`` first."""
        return [[*self.bos, *self._encode(t)] for t in self.texts]

    def allowed(self) -> torch.Tensor:
        """(K,) token ids a prefix may hold: the vocabulary less the tokenizer's special tokens."""
        return allowed_tokens(self.model, self.tokenizer)

    def score(self, elicitation: Elicitation) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) log-probability of each labelled answer and (N,) bool: whether it is the argmax, under
        ``elicitation``. Counts one query per example."""
        self.spend(len(self.prompts))
        return answer_scores(
            self.model, self.prompt_ids, self.answer_ids, elicitation, n_bos=len(self.bos),
            batch_size=self.batch_size,
        )  # fmt: skip

    def score_prefixes(self, prefixes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,) mean log-probability of the labelled answers and (P,) accuracy with each prefix (one
        batched pass for all of them). Counts one query per prefix per example."""
        n = len(self.prompts)
        self.spend(n * len(prefixes))
        b = len(self.bos)
        seqs = [[*p[:b], *prefix, *p[b:]] for prefix in prefixes for p in self.prompt_ids]
        logp, hits = answer_scores(
            self.model, seqs, self.answer_ids * len(prefixes), n_bos=b, batch_size=self.batch_size
        )
        return logp.view(-1, n).mean(1), hits.view(-1, n).double().mean(1)


def answer_scores(
    model: nn.Module,
    prompts: list[list[int]],
    answers: list[int],
    elicitation: Elicitation | None = None,
    *,
    n_bos: int = 1,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) log-probability of each answer id after its prompt and (N,) bool: whether it is the argmax of
    the next-token logits, with ``elicitation`` applied (its model, its prefix after the first ``n_bos``
    ids of each prompt, its steering vectors). Batched; no gradient."""
    from eis.tools.lm_hooks import run_with_hooks
    from eis.zoo.language.lm import pad

    el = elicitation or Elicitation()
    net = el.model if el.model is not None else model
    seqs = [[*p[:n_bos], *el.prefix, *p[n_bos:]] for p in prompts]
    hooks = [(name, _adder(v)) for name, v in el.steering.items()]
    logp_out, hit_out = [], []
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i : i + batch_size]
            ids = pad(chunk)
            logits = run_with_hooks(net, ids, hooks, attention_mask=torch.ones_like(ids)).float()
            last = logits[torch.arange(len(chunk)), torch.tensor([len(s) - 1 for s in chunk])]
            target = torch.as_tensor(answers[i : i + batch_size])
            logp_out.append(last.log_softmax(-1).gather(-1, target[:, None]).squeeze(-1))
            hit_out.append(last.argmax(-1) == target)
    if not logp_out:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(logp_out), torch.cat(hit_out)


def _adder(vector: torch.Tensor) -> Any:
    def add(act: torch.Tensor, _hook: str) -> torch.Tensor:
        return act + vector.to(act.dtype)

    return add


class ElicitTool(Tool):
    """Base of the ``lm_elicit`` family: subclasses implement ``solve``; callers call ``elicit``."""

    family: ClassVar[str] = "lm_elicit"

    def elicit(self, task: ElicitTask) -> Elicitation:
        """Check the task, then solve it (queries counted from zero). Must not change the task's model."""
        task.check()
        task.queries = 0
        answer = self.solve(task)
        if not isinstance(answer, Elicitation):
            raise EisError(f"{self.name} returned {type(answer).__name__}, not an Elicitation")
        if len(answer.prefix) > task.max_prefix_tokens:
            raise EisError(f"{self.name} submitted a prefix longer than {task.max_prefix_tokens} tokens")
        if answer.model is task.model:
            raise EisError(f"{self.name} returned the task's own model; return a copy or None")
        answer.queries = task.queries
        return answer

    def solve(self, task: ElicitTask) -> Elicitation:
        raise NotImplementedError
