"""The elicitation contract check (called by :func:`eis.testing.check_tool` for this family).

Asked on a seeded random two-layer GPT-2 over the whole vocabulary of the language of seed 0, with four
labelled quizzes and four unrelated documents of that language and a small budget: the answer must be an
:class:`Elicitation` whose prefix holds at most ``max_prefix_tokens`` allowed tokens, whose steering names
are hook points of the model with finite (d_model,) vectors, and whose model, if any, is a copy in eval
mode; the reported queries must be the task's count and within the budget; a second call must give the
same answer; the task's model (weights, mode, gradients) must be untouched; malformed tasks must raise
EisError. A tool may refuse with a non-empty :class:`~eis.errors.ToolRefusal` message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from eis.errors import EisError, ToolRefusal
from eis.testing import record_refusal
from eis.tools.lm_elicit.base import Elicitation, ElicitTask, ElicitTool
from eis.tools.lm_hooks import hook_names


def contract_task(seed: int = 0) -> ElicitTask:
    """A small task on a seeded random GPT-2 (two layers, d_model 32) with the tokenizer of language 0."""
    from transformers import GPT2LMHeadModel

    from eis.zoo.language.grammar import hf_tokenizer, language
    from eis.zoo.language.lm import gpt2_config
    from eis.zoo.language.password import quizzes

    lang = language(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(gpt2_config(len(lang.vocab), 32, 2)).eval()
    qs = quizzes(lang, "labelled", 4)
    texts = [d.text for d in lang.documents("train", 12) if not d.question][:4]
    return ElicitTask(
        model, hf_tokenizer(lang), [q.text for q in qs], [q.answer for q in qs], texts, max_prefix_tokens=2,
        budget=300,
    )  # fmt: skip


def _same(a: Elicitation, b: Elicitation) -> bool:
    if a.prefix != b.prefix or sorted(a.steering) != sorted(b.steering):
        return False
    if any(not torch.equal(a.steering[k], b.steering[k]) for k in a.steering):
        return False
    if (a.model is None) != (b.model is None):
        return False
    if a.model is None or b.model is None:
        return True
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def check_elicit_tool(tool: ElicitTool, report: Any, seed: int = 0) -> Any:
    """Fill ``report`` (an :class:`eis.testing.ToolReport`); raise AssertionError on a violation."""
    task = contract_task(seed)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    where = f"{tool.name} on a random GPT-2"
    try:
        first = tool.elicit(task)
    except ToolRefusal as exc:
        return record_refusal(report, exc, where, "random gpt2 ")
    if not isinstance(first, Elicitation):
        raise AssertionError(f"{where}: returned {type(first).__name__}")
    allowed = set(task.allowed().tolist())
    if len(first.prefix) > task.max_prefix_tokens or not set(first.prefix) <= allowed:
        raise AssertionError(f"{where}: prefix {first.prefix} is too long or holds special tokens")
    names, d_model = set(hook_names(task.model)), int(task.model.config.n_embd)
    for name, vector in first.steering.items():
        if name not in names or vector.shape != (d_model,) or not torch.isfinite(vector).all():
            raise AssertionError(
                f"{where}: steering {name!r} is no hook point or no finite (d_model,) vector"
            )
    if first.model is not None and (first.model is task.model or first.model.training):
        raise AssertionError(f"{where}: the returned model is the task's own or in train mode")
    if first.queries != task.queries or first.queries > task.budget:
        raise AssertionError(f"{where}: reported {first.queries} queries; counted {task.queries}")
    again = tool.elicit(dataclasses.replace(task, queries=0))
    if not _same(first, again):
        raise AssertionError(f"{where}: two calls give different elicitations")
    after = task.model.state_dict()
    grads = any(p.grad is not None for p in task.model.parameters())
    if task.model.training or grads or any(not torch.equal(before[k], after[k]) for k in before):
        raise AssertionError(f"{where}: changed the model's weights, mode or gradients")
    report.passed.append("elicitation, prefix, steering, model copy, queries, determinism, no side effects")
    for bad in (
        dataclasses.replace(task, prompts=[], answers=[]),
        dataclasses.replace(task, answers=["two words", *task.answers[1:]]),
        dataclasses.replace(task, answers=["no_such_word", *task.answers[1:]]),
    ):
        try:
            tool.elicit(bad)
        except EisError:
            continue
        raise AssertionError(f"{where}: a malformed task (answers {bad.answers[:1]}) did not raise EisError")
    report.passed.append("bad inputs raise EisError")
    return report
