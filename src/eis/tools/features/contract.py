"""The features contract check (called by :func:`eis.testing.check_tool` for this family).

Every tool is asked on a small seeded synthetic task (12 sparse features in 6 dimensions): the answer must
be :class:`FoundFeatures` that fit the task (at most ``width`` directions in activation space, one activation
per held-out input and latent, finite values), the same on a second call, and one held-out input must work;
the task's tensors must come back unchanged. Malformed tasks (activations of the wrong rank or width, NaN,
a width of 0, a supervised tool without labels) must raise EisError. A tool may refuse with a non-empty
:class:`~eis.errors.ToolRefusal` message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from eis.errors import EisError, ToolRefusal
from eis.testing import record_refusal
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures
from eis.zoo.features.generate import random_dictionary, sample_features, stream
from eis.zoo.features.spec import FeatureSpec


def contract_task(seed: int = 0, supervised: bool = False) -> FeatureTask:
    """A small synthetic task: 12 features firing with p = 0.1 in 6 dimensions, 384 + 64 rows."""
    spec = FeatureSpec("contract", seed=seed, n_features=12, d=6, p_active=0.1)
    dictionary = random_dictionary(12, 6, stream(seed, "contract-dictionary"))
    train = sample_features(spec, 384, stream(seed, "contract-train"))
    held_out = sample_features(spec, 64, stream(seed, "contract-eval"))
    labels = train > 0 if supervised else None
    return FeatureTask(train @ dictionary, held_out @ dictionary, 12, labels, seed)


def _bad_tasks(task: FeatureTask, supervised: bool) -> dict[str, FeatureTask]:
    nan = task.inputs.clone()
    nan[0, 0] = float("nan")
    bad = {
        "1-d train": dataclasses.replace(task, train=task.train[:, 0]),
        "inputs of another width": dataclasses.replace(task, inputs=task.inputs[:, :-1]),
        "NaN inputs": dataclasses.replace(task, inputs=nan),
        "width 0": dataclasses.replace(task, width=0),
    }
    if supervised:
        bad["no labels"] = dataclasses.replace(task, labels=None)
    return bad


def check_feature_tool(tool: FeatureTool, report: Any, seed: int = 0) -> Any:
    """Fill ``report`` (an :class:`eis.testing.ToolReport`); raise AssertionError on a violation."""
    task = contract_task(seed, tool.supervised)
    before = {k: v.clone() for k, v in dataclasses.asdict(task).items() if isinstance(v, torch.Tensor)}
    try:
        first = tool.find(task)
    except ToolRefusal as exc:
        return record_refusal(report, exc, tool.name, "synthetic ")
    if not isinstance(first, FoundFeatures):
        raise AssertionError(f"{tool.name}: returned {type(first).__name__}, not FoundFeatures")
    try:
        first.check(task, tool.name)
    except EisError as exc:
        raise AssertionError(str(exc)) from None
    report.passed.append("synthetic shape/finite")
    again = tool.find(task)
    for name in ("directions", "activations", "reconstruction"):
        a, b = getattr(first, name), getattr(again, name)
        if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-5, atol=1e-6)):
            raise AssertionError(f"{tool.name}: two calls with the same seed give different {name}")
    report.passed.append("synthetic deterministic")
    for k, v in before.items():
        if not torch.equal(getattr(task, k), v):
            raise AssertionError(f"{tool.name}: changed the task's {k}")
    report.passed.append("synthetic no side effects")
    one = dataclasses.replace(task, inputs=task.inputs[:1].clone())
    try:
        tool.find(one).check(one, tool.name)
    except EisError as exc:
        raise AssertionError(f"{tool.name} on one held-out input: {exc}") from None
    report.passed.append("synthetic one input")
    for what, bad in _bad_tasks(task, tool.supervised).items():
        try:
            tool.find(bad)
        except EisError as exc:
            if not str(exc).strip():
                raise AssertionError(f"{tool.name} on {what}: EisError with an empty message") from None
        else:
            raise AssertionError(f"{tool.name}: a task with {what} did not raise EisError")
    report.passed.append("bad inputs raise EisError")
    return report
