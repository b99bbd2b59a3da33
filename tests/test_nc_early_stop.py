"""Neural Cleanse early stopping: converged classes are frozen and leave the batch, the run stays
deterministic, the steps are recorded, and on a smoke-zoo trojan the verdict is the full run's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eis.tools.base import make_tool
from eis.tools.detection.neural_cleanse import reverse_engineer


class AlwaysZero(nn.Module):
    """Predicts class 0 for every input (a large bias), so class 0 reaches full attack success at once and
    every other class never does; records the batch sizes it is called with."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 5)
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.copy_(torch.tensor([10.0, 0, 0, 0, 0]))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.fc(x.flatten(1))


def _x() -> torch.Tensor:
    return torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_converged_class_is_frozen_and_leaves_the_batch() -> None:
    model, x = AlwaysZero().eval(), _x()
    kw = {"steps": 40, "batch_size": 8, "seed": 0}
    full = reverse_engineer(model, x, 5, **kw)
    model.batches.clear()
    es = reverse_engineer(model, x, 5, stop_patience=5, stop_tol=0.5, **kw)
    assert full["steps_run"].tolist() == [40] * 5
    steps = es["steps_run"].tolist()
    assert 5 < steps[0] < 40 and steps[1:] == [40] * 4  # class 0 frozen; the others never reached the ASR
    assert model.batches[: steps[0]] == [5 * 8] * steps[0] and set(model.batches[steps[0] :]) == {4 * 8}
    assert bool(es["reached"][0]) and not es["reached"][1:].any()
    assert float(es["norms"][0]) >= float(full["norms"][0])  # frozen early: its best mask is no smaller
    assert torch.allclose(es["norms"][1:], full["norms"][1:], rtol=1e-4)  # the others' runs are untouched


def test_early_stopping_is_deterministic_and_recorded() -> None:
    model, x = AlwaysZero().eval(), _x()
    kw = {"steps": 30, "batch_size": 8, "seed": 2, "stop_patience": 4, "stop_tol": 0.5}
    a, b = reverse_engineer(model, x, 5, **kw), reverse_engineer(model, x, 5, **kw)
    assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["patterns"], b["patterns"])
    assert torch.equal(a["steps_run"], b["steps_run"])
    det = make_tool("neural_cleanse", steps=30, batch_size=8, stop_patience=4, stop_tol=0.5).inspect(
        model, x, torch.zeros(16, dtype=torch.long), 5
    )
    assert det.details["steps_run"] == a["steps_run"].tolist()
    assert det.details["steps_total"] == sum(det.details["steps_run"]) < 30 * 5
    off = make_tool("neural_cleanse", steps=30, batch_size=8, stop_patience=0)
    assert off.inspect(model, x, torch.zeros(16, dtype=torch.long), 5).details["steps_total"] == 30 * 5


@pytest.mark.slow
def test_early_stopping_keeps_the_verdict_on_a_zoo_trojan(smoke) -> None:
    case = smoke["digits-cnn-patch"]
    model = case.model(device="cpu")
    x, y = case.inputs(256)
    assert make_tool("neural_cleanse").stop_patience == 0  # off by default: see bench_nc_budget.py
    full = make_tool("neural_cleanse").inspect(model, x, y, case.num_classes)
    es = make_tool("neural_cleanse", stop_patience=50, stop_tol=0.01).inspect(model, x, y, case.num_classes)
    assert full.score >= 2 and es.score >= 2 and es.target == full.target == case.truth().target
    assert es.details["steps_total"] < full.details["steps_total"] == 300 * case.num_classes


def test_answers_trace_gives_what_a_shorter_run_returns() -> None:
    """The benchmark reads a budget of T steps off a longer run's "answers"; that must equal a T-step run."""
    model, x = AlwaysZero().eval(), _x()
    kw = {"batch_size": 8, "seed": 3}
    full = reverse_engineer(model, x, 5, steps=30, trace=True, **kw)
    assert full["answers"].shape == (30, 5)
    torch.testing.assert_close(full["answers"][-1], full["norms"].cpu())
    for t in (1, 12):
        short = reverse_engineer(model, x, 5, steps=t, **kw)
        torch.testing.assert_close(full["answers"][t - 1], short["norms"].cpu())
    reached = torch.isfinite(full["trace"])
    assert torch.equal(full["answers"][reached], full["trace"][reached])  # reached: the best norm
