"""The rule-recovery contract check (called by :func:`eis.testing.check_tool` for this family).

Every family is asked on a seeded random network (a digits CNN for image families, a one-layer
transformer over Z_13 for token families): the answer must be a :class:`RuleAnswer` whose labels are one
bool per input, whose description is JSON, which is the same on a second call, and which leaves the
model's weights and mode alone; a malformed task must raise EisError. A tool may refuse a family with a
non-empty :class:`~eis.errors.ToolRefusal` message.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from eis.errors import EisError, ToolRefusal
from eis.tools.rule_recovery.base import RuleAnswer, RuleTask, RuleTool
from eis.zoo.rules.grammar import FAMILIES, kind_of
from eis.zoo.rules.models import all_pairs, train_token_model

P = 13


def contract_task(family: str, seed: int = 0) -> RuleTask:
    """A small task of ``family`` on a seeded random network."""
    if kind_of(family) == "token":
        pairs = all_pairs(P)[::2]
        model = train_token_model(P, pairs, torch.zeros(len(pairs), dtype=torch.bool), seed, steps=0)
        return RuleTask(model, "token", family, pairs, {"p": P})
    from eis.zoo.archs import build_arch
    from eis.zoo.datasets import get_dataset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_arch("cnn", 1, 2, 16).eval()
    return RuleTask(model, "image", family, get_dataset("digits").test_x[:48], {"dataset": "digits"})


def check_rule_tool(tool: RuleTool, report: Any, seed: int = 0) -> Any:
    """Fill ``report`` (an :class:`eis.testing.ToolReport`); raise AssertionError on a violation."""
    for family in FAMILIES:
        task = contract_task(family, seed)
        before = {k: v.clone() for k, v in task.model.state_dict().items()}
        try:
            first = tool.recover(task)
        except ToolRefusal as exc:
            if not str(exc).strip():
                raise AssertionError(f"{tool.name} on {family}: ToolRefusal with an empty message") from None
            report.refusals[f"{family} "] = str(exc)
            continue
        if not isinstance(first, RuleAnswer):
            raise AssertionError(f"{tool.name} on {family}: returned {type(first).__name__}")
        labels = first(task.inputs)
        if labels.shape != (len(task.inputs),) or labels.dtype != torch.bool:
            raise AssertionError(f"{tool.name} on {family}: labels of shape {tuple(labels.shape)}")
        json.dumps(first.description)  # raises on a description that is not JSON
        if tool.recover(task).description != first.description:
            raise AssertionError(f"{tool.name} on {family}: two calls give different answers")
        after = task.model.state_dict()
        if task.model.training or any(not torch.equal(before[k], after[k]) for k in before):
            raise AssertionError(f"{tool.name} on {family}: changed the model's weights or mode")
        report.passed.append(f"{family} answer, labels, determinism, no side effects")
    bad = contract_task(FAMILIES[0], seed)
    bad.family = "no_such_family"
    try:
        tool.recover(bad)
    except EisError:
        report.passed.append("bad inputs raise EisError")
    else:
        raise AssertionError(f"{tool.name}: a task with an unknown family did not raise EisError")
    return report
