"""The LM-detection contract check (called by :func:`eis.testing.check_tool` for this family).

Asked of seeded random one-layer GPT-2s with the tokenizer of the language of seed 0 (the trigger-recovery
contract's models, :func:`eis.tools.lm_trigger.contract.contract_task`), the candidates being that
language's names among the first token ids the models know. A learned tool is first fitted on four of
them (labels 0, 1, 0, 1); asked before fitting it must raise EisError, and what it learned must round-trip
through ``get_state``/``set_state``. Then: the answer is an :class:`LMDetection` with a finite score and a
target (if any) that starts with a candidate; a second call gives the same answer; the model's weights,
mode and gradients are untouched; malformed tasks (no candidates, a word outside the vocabulary, a model in
train mode) raise EisError. A tool may refuse with a non-empty :class:`~eis.errors.ToolRefusal` message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from eis.errors import EisError, ToolRefusal
from eis.testing import record_refusal
from eis.tools.lm_detect.base import LMDetection, LMDetectionTool, LMDetectTask


def contract_tasks(n: int = 5, seed: int = 0) -> list[LMDetectTask]:
    """``n`` tasks on random GPT-2s seeded ``seed``, ``seed + 1``, ...; candidates: 8 names they know."""
    from eis.tools.lm_trigger.contract import VOCAB, contract_task

    out = []
    for i in range(n):
        trig = contract_task(seed + i)
        ids = {w: trig.tokenizer.convert_tokens_to_ids(w) for w in trig.tokenizer.get_vocab()}
        names = [w for w in sorted(ids, key=ids.get) if 0 <= ids[w] < VOCAB and w.isalpha()][-8:]
        out.append(LMDetectTask(trig.model, trig.tokenizer, names, ["a text"], batch_size=512))
    return out


def check_lm_detect_tool(tool: LMDetectionTool, report: Any, seed: int = 0) -> Any:
    """Fill ``report`` (an :class:`eis.testing.ToolReport`); raise AssertionError on a violation."""
    tasks = contract_tasks(5, seed)
    task = tasks[-1]
    where = f"{tool.name} on a random GPT-2"
    if tool.learned:
        try:
            type(tool)(**tool.settings()).detect(task)
        except EisError:
            pass
        else:
            raise AssertionError(f"{where}: a learned tool answered before it was fitted")
        tool.fit(tasks[:4], [0, 1, 0, 1])
        tensors, meta = tool.get_state()
        restored = type(tool)(**tool.settings())
        restored.set_state(tensors, meta)
        report.passed.append("refuses before fit, fit, state round-trip")
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    try:
        first = tool.detect(task)
    except ToolRefusal as exc:
        return record_refusal(report, exc, where, "random gpt2 ")
    if not isinstance(first, LMDetection):
        raise AssertionError(f"{where}: returned {type(first).__name__}")
    again = (restored if tool.learned else tool).detect(task)
    if (again.score, again.target) != (first.score, first.target):
        raise AssertionError(f"{where}: two calls (or a restored state) give different answers")
    after = task.model.state_dict()
    grads = any(p.grad is not None for p in task.model.parameters())
    if task.model.training or grads or any(not torch.equal(before[k], after[k]) for k in before):
        raise AssertionError(f"{where}: changed the model's weights, mode or gradients")
    report.passed.append("finite score, target among candidates, determinism, no side effects")
    for what, bad in (
        ("no candidates", dataclasses.replace(task, candidates=[])),
        ("a word outside the vocabulary", dataclasses.replace(task, candidates=["no_such_word"])),
    ):
        try:
            tool.detect(bad)
        except EisError:
            continue
        raise AssertionError(f"{where}: a task with {what} did not raise EisError")
    task.model.train()
    try:
        tool.detect(task)
    except EisError:
        pass
    else:
        raise AssertionError(f"{where}: a model in train mode did not raise EisError")
    finally:
        task.model.eval()
    report.passed.append("bad inputs raise EisError")
    return report
