"""The trigger-recovery contract check (called by :func:`eis.testing.check_tool` for this family).

Asked on a seeded random one-layer GPT-2 with that language's tokenizer, whose embedding covers only the
first :data:`VOCAB` token ids (so that the exhaustive control's check stays cheap; allowed tokens are those
both know): the answer must be a :class:`TriggerAnswer` of at most ``n_candidates`` triggers, each 1 to
``max_tokens`` allowed tokens whose decoded text re-encodes to the same ids; the reported queries must be
the task's count and within the budget (for budgeted tools); a second call, traced at :data:`TRACE_AT`,
must give the same answer, and what its trace holds at a checkpoint must be what a run with that budget
returns; the model's weights, mode and gradients must be untouched; malformed tasks must raise EisError.
A tool may refuse with a non-empty :class:`~eis.errors.ToolRefusal` message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from eis.errors import EisError, ToolRefusal
from eis.testing import record_refusal
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool

UNBUDGETED = {"exhaustive_trigger_search"}  # the ceiling control, documented as outside the budget
VOCAB = 64
TRACE_AT = (50, 250)  # checkpoints of the traced run, checked against runs at those budgets


def contract_task(seed: int = 0) -> TriggerTask:
    """A small task on a seeded random GPT-2 (one layer, d_model 32, :data:`VOCAB` tokens) with the
    tokenizer of the language of seed 0; the target is three of its names."""
    from transformers import GPT2LMHeadModel

    from eis.zoo.language.grammar import hf_tokenizer, language
    from eis.zoo.language.lm import gpt2_config

    lang = language(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(gpt2_config(VOCAB, 32, 1)).eval()
    target = " ".join(lang.categories["name"][:3])
    return TriggerTask(model, hf_tokenizer(lang), target, max_tokens=3, n_candidates=3, budget=600)


def check_trigger_tool(tool: TriggerTool, report: Any, seed: int = 0) -> Any:
    """Fill ``report`` (an :class:`eis.testing.ToolReport`); raise AssertionError on a violation."""
    task = contract_task(seed)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    try:
        first = tool.recover(task)
    except ToolRefusal as exc:
        return record_refusal(report, exc, tool.name, "random gpt2 ")
    where = f"{tool.name} on a random GPT-2"
    if not isinstance(first, TriggerAnswer):
        raise AssertionError(f"{where}: returned {type(first).__name__}")
    allowed = set(task.allowed().tolist())
    if not first.triggers or len(first.triggers) != len(first.token_ids) or len(first.triggers) > 3:
        raise AssertionError(f"{where}: {len(first.triggers)} triggers for {len(first.token_ids)} id lists")
    for text, ids in zip(first.triggers, first.token_ids, strict=True):
        if not 1 <= len(ids) <= 3 or not set(ids) <= allowed:
            raise AssertionError(f"{where}: trigger {ids} is empty, too long or holds special tokens")
        if task.tokenizer(text, add_special_tokens=False)["input_ids"] != list(ids):
            raise AssertionError(f"{where}: trigger text {text!r} does not re-encode to its ids {ids}")
    if first.queries != task.queries or (tool.name not in UNBUDGETED and first.queries > task.budget):
        raise AssertionError(f"{where}: reported {first.queries} queries; counted {task.queries}")
    traced = dataclasses.replace(task, queries=0, checkpoints=TRACE_AT)
    again = tool.recover(traced)
    if again.token_ids != first.token_ids:
        raise AssertionError(f"{where}: two calls (the second traced) give different triggers")
    for b, answer in traced.trace.items():
        at = tool.recover(dataclasses.replace(task, queries=0, budget=b))
        if (at.token_ids, at.queries) != (answer.token_ids, answer.queries):
            raise AssertionError(f"{where}: its trace at {b} queries is not what a run at budget {b} returns")
    after = task.model.state_dict()
    grads = any(p.grad is not None for p in task.model.parameters())
    if task.model.training or grads or any(not torch.equal(before[k], after[k]) for k in before):
        raise AssertionError(f"{where}: changed the model's weights, mode or gradients")
    report.passed.append("answer, trigger ids, queries, determinism, trace, no side effects")
    for bad in (
        dataclasses.replace(task, target=""),
        dataclasses.replace(task, target="no_such_word"),
        dataclasses.replace(task, max_tokens=0),
    ):
        try:
            tool.recover(bad)
        except EisError:
            continue
        raise AssertionError(f"{where}: a malformed task (target {bad.target!r}) did not raise EisError")
    report.passed.append("bad inputs raise EisError")
    return report
