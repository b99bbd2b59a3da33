"""Repair methods: the shared contract, DER worked by hand, the budget draw, and the pruning helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eis.errors import EisError
from eis.testing import check_repair_tool
from eis.tools.base import list_tools
from eis.tools.repair.units import feature_map
from eis.tracks.metrics.repair import der, outcomes
from eis.tracks.repair import budget_indices

# Few steps keep the contract fast; the checks themselves do not depend on them.
FAST = {
    "anp": {"steps": 3},
    "finetune": {"epochs": 1},
    "fine_pruning": {"epochs": 1},
    "random_prune": {"epochs": 1},
    "attribution_prune": {"epochs": 1},
    "nc_unlearning": {"epochs": 1},
}


def test_registry() -> None:
    assert set(list_tools("repair")) >= {
        "noop", "finetune", "random_prune", "fine_pruning", "nc_unlearning", "anp", "attribution_prune",
    }  # fmt: skip
    assert set(list_tools("repair", controls=True)) == {"noop", "finetune", "random_prune"}


@pytest.mark.parametrize("name", list_tools("repair"))
def test_contract(name: str) -> None:
    report = check_repair_tool(name, FAST.get(name))
    assert not report.refusals, str(report)
    assert report.passed


def test_contract_catches_violations() -> None:
    """A method that edits the caller's model, or returns another architecture, fails the contract."""
    import dataclasses

    from eis.tools.repair.base import Repaired, RepairTool

    @dataclasses.dataclass
    class InPlace(RepairTool):
        name = "in_place"

        def repair(self, model, x, y, num_classes, *, detection=None):  # type: ignore[no-untyped-def]
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
            return Repaired(model)

    @dataclasses.dataclass
    class Swap(RepairTool):
        name = "swap"

        def _repair(self, model, x, y, num_classes, detected):  # type: ignore[no-untyped-def]
            return Repaired(nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), num_classes)))

    with pytest.raises(AssertionError, match="weights and buffers"):
        check_repair_tool(InPlace())
    with pytest.raises(AssertionError, match="returned a Sequential"):
        check_repair_tool(Swap())


def test_der_hand_worked() -> None:
    assert der(1.0, 0.0, 0.9, 0.9) == 1.0  # all of the attack removed, nothing lost
    assert der(1.0, 1.0, 0.9, 0.9) == 0.5  # nothing changed
    assert der(0.9, 0.1, 0.95, 0.85) == pytest.approx((0.8 - 0.1 + 1) / 2)
    assert der(0.5, 0.7, 0.8, 0.9) == 0.5  # a worse ASR and a better accuracy both count as zero
    assert der(1.0, 1.0, 1.0, 0.0) == 0.0


def test_outcomes_hand_worked() -> None:
    """A model that predicts class 0 for inputs whose first pixel is 1, else class 1."""

    class Rule(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            on = x.flatten(1)[:, 0]
            return torch.stack([on, 1 - on], 1)

    clean_x = torch.zeros(4, 1, 2, 2)
    clean_y = torch.tensor([1, 1, 0, 1])
    trig_x = torch.zeros(3, 1, 2, 2)
    trig_x[:2, 0, 0, 0] = 1  # two of three triggered inputs go to target 0
    trig_y = torch.tensor([1, 2, 1])
    out = outcomes(Rule(), clean_x, clean_y, trig_x, trig_y, target=0)
    assert out["c_acc"].tolist() == [1, 1, 0, 1]
    assert out["asr"].tolist() == [1, 1, 0]
    assert out["ra"].tolist() == [0, 0, 1]


def test_budget_indices() -> None:
    a = budget_indices(1400, 0.05, seed=3)
    assert len(a) == 70 and torch.equal(a, budget_indices(1400, 0.05, seed=3))
    assert len(set(a.tolist())) == 70 and not torch.equal(a, budget_indices(1400, 0.05, seed=4))
    with pytest.raises(EisError, match="0 inputs"):
        budget_indices(10, 0.01, seed=0)
    with pytest.raises(EisError, match=r"\(0, 1\]"):
        budget_indices(10, 0.0, seed=0)


def test_feature_map_finds_the_head_input() -> None:
    from eis.testing import contract_model

    cnn = contract_model("cnn", 1, 16)
    fm = feature_map(cnn, torch.rand(2, 1, 16, 16))
    assert fm.head is cnn.classifier[2] and (fm.channels, fm.positions) == (64, 16)
    res = contract_model("resnet", 3, 32)
    fm = feature_map(res, torch.rand(2, 3, 32, 32))
    assert fm.head is res.fc and (fm.channels, fm.positions) == (64, 1)
    # pruning channel c zeroes exactly its columns of the head, so the channel no longer reaches the output
    x = torch.rand(4, 3, 32, 32)
    fm.prune([5])
    w = res.fc.weight.detach()
    assert float(w[:, 5].abs().sum()) == 0.0 and float(w[:, 4].abs().sum()) > 0
    from eis.errors import ToolRefusal

    with pytest.raises(ToolRefusal):
        feature_map(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), x[:, :, :4, :4])
