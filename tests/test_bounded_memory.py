"""Bounded memory: batched passes stay within their element budgets, and Neural Cleanse's class groups
give the answer a single run gives (the peak itself is measured by benchmarks/bench_memory.py)."""

from __future__ import annotations

import torch
from torch import nn

from eis import batching
from eis.batching import rows_per_pass
from eis.tools.base import make_tool
from eis.tools.detection.neural_cleanse import reverse_engineer


def test_rows_per_pass_against_hand_values() -> None:
    assert rows_per_pass((1, 28, 28), 4096, budget=1 << 23) == 4096  # 4096 * 784 = 3.2M elements fit
    assert rows_per_pass((3, 224, 224), 4096, budget=1 << 23) == 55  # 8388608 // 150528
    assert rows_per_pass((3, 224, 224), 4096, budget=100) == 1  # never fewer than one row
    assert rows_per_pass((3, 32, 32), 10, budget=1 << 23) == 10  # the tool's own cap wins when smaller


def _tiny(classes: int = 6) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, classes))


def test_nc_class_groups_give_the_single_run_answer(monkeypatch) -> None:
    model = _tiny().eval()
    x = torch.rand(20, 1, 8, 8)
    whole = reverse_engineer(model, x, 6, steps=15, batch_size=8, trace=True)
    monkeypatch.setattr(batching, "PARAM_ELEMENTS", 2 * 64)  # two classes' masks at a time: three groups
    grouped = reverse_engineer(model, x, 6, steps=15, batch_size=8, trace=True)
    for key in ("norms", "masks", "patterns", "lams"):
        torch.testing.assert_close(grouped[key], whole[key], rtol=1e-5, atol=1e-6)
    assert torch.equal(grouped["reached"], whole["reached"])
    assert torch.equal(grouped["steps_run"], whole["steps_run"])
    torch.testing.assert_close(grouped["trace"], whole["trace"], rtol=1e-5, atol=1e-6)


def test_passes_stay_within_the_input_budget(monkeypatch) -> None:
    """With a budget of 40 input rows, no detector's forward pass holds more (NC: never fewer than one
    class's batch of 8), and the scores do not change."""
    model = _tiny().eval()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 6, (32,))
    settings = {"neural_cleanse": {"steps": 5, "batch_size": 8}, "specificity": {"n_triggers": 8}}
    names = ("neural_cleanse", "specificity", "strip")

    def scores() -> dict[str, float]:
        return {n: make_tool(n, **settings.get(n, {})).inspect(model, x, y, 6).score for n in names}

    free = scores()
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    monkeypatch.setattr(batching, "INPUT_ELEMENTS", 40 * 64)
    bounded = scores()
    hook.remove()
    assert seen and max(seen) <= 40
    for n in names:
        assert (free[n] != free[n] and bounded[n] != bounded[n]) or abs(free[n] - bounded[n]) < 1e-5, n
