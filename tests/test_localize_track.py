"""The localize track end to end on a fake Case: a tiny MLP trojaned with a 4x4 checkerboard on digits."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from eis.errors import EisError
from eis.tools.base import AttributionTool, Tool
from eis.tracks import load_builtin_tracks
from eis.tracks.base import TRACKS
from eis.tracks.localize import LocalizeTrack
from eis.tracks.metrics.localization import LOWER_IS_BETTER, METRIC_NAMES

SIZE, PATCH, TARGET = 16, 4, 0


def _checkerboard() -> torch.Tensor:
    i = torch.arange(PATCH)
    return ((i[:, None] + i[None, :]) % 2).float().unsqueeze(0)  # (1, 4, 4)


def _paste(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[..., -PATCH:, -PATCH:] = _checkerboard().to(x.device)
    mask = torch.zeros(x.shape[0], SIZE, SIZE, dtype=torch.bool, device=x.device)
    mask[:, -PATCH:, -PATCH:] = True
    return x, mask


@dataclasses.dataclass
class FakeTruth:
    kind: str = "patch"
    target: int | None = TARGET
    sources: list[int] | None = None
    trigger: torch.Tensor = dataclasses.field(default_factory=_checkerboard)
    trigger_mask: torch.Tensor = dataclasses.field(
        default_factory=lambda: torch.ones(PATCH, PATCH, dtype=torch.bool)
    )

    def apply(self, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return _paste(x)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return y != TARGET


class FakeCase:
    """Same API as eis.zoo's Case, enough for the track."""

    def __init__(self, name: str, kind: str, state: dict[str, torch.Tensor], data: tuple) -> None:
        self.id = self.name = name
        self.dataset, self.arch, self.num_classes, self.input_shape = "digits", "mlp", 10, (1, SIZE, SIZE)
        self.meta: dict[str, Any] = {}
        self._state, self._data, self._kind = state, data, kind

    def model(self, device: str | None = None) -> nn.Module:
        m = _mlp()
        m.load_state_dict(self._state)
        return m.eval().to(device or "cpu")

    def inputs(self, n: int | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._data
        return (x, y) if n is None else (x[:n], y[:n])

    def truth(self) -> FakeTruth:
        return FakeTruth(kind=self._kind)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def cases() -> dict[str, FakeCase]:
    """Two trojaned models (same data, different init), one labelled a patch case, one a spurious case."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="nearest")
    y = torch.tensor(d.target, dtype=torch.int64)
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
    poison = torch.arange(len(xtr)) % 8 == 0
    xp, _ = _paste(xtr[poison])
    xtr = torch.cat([xtr, xp])
    ytr = torch.cat([ytr, torch.full((len(xp),), TARGET)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: thread hand-offs cost more than they save on a busy machine
    try:
        return _train(xtr, ytr, xte, yte)
    finally:
        torch.set_num_threads(threads)


def _train(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor) -> dict[str, FakeCase]:
    out = {}
    for i, (name, kind) in enumerate([("case_a", "patch"), ("case_b", "spurious")]):
        torch.manual_seed(i)
        m = _mlp()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(80):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xtr), ytr).backward()
            opt.step()
        out[name] = FakeCase(
            name, kind, {k: v.detach().clone() for k, v in m.state_dict().items()}, (xte, yte)
        )
    return out


# ---- test-only tools (not registered) -------------------------------------------------------------------


class CornerOracle(AttributionTool):
    """Highlights the bottom-right 4x4 block: where the fake trigger always goes."""

    name: ClassVar[str] = "oracle"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(inputs)
        out[..., -PATCH:, -PATCH:] = 1.0
        return out


class WrongCorner(AttributionTool):
    """Highlights the top-left 4x4 block: always wrong."""

    name: ClassVar[str] = "wrong_corner"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(inputs.shape[0], SIZE, SIZE, device=inputs.device)
        out[:, :PATCH, :PATCH] = 1.0
        return out


class Saliency(AttributionTool):
    name: ClassVar[str] = "saliency"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = inputs.detach().clone().requires_grad_(True)
        model(x).gather(1, target[:, None]).sum().backward()
        return x.grad.abs()


class EdgeDetector(AttributionTool):
    name: ClassVar[str] = "edge_detector"
    control: ClassVar[bool] = True

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gx = torch.zeros_like(inputs)
        gy = torch.zeros_like(inputs)
        gx[..., :, 1:] = inputs[..., :, 1:] - inputs[..., :, :-1]
        gy[..., 1:, :] = inputs[..., 1:, :] - inputs[..., :-1, :]
        return (gx**2 + gy**2).sqrt()


class Blank(AttributionTool):
    name: ClassVar[str] = "blank_map"
    control: ClassVar[bool] = True

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(inputs)


class NaNTool(AttributionTool):
    name: ClassVar[str] = "nan_tool"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(inputs)
        out[1, 0, 0, 0] = math.nan
        return out


class BadShape(AttributionTool):
    name: ClassVar[str] = "bad_shape"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.ones(inputs.shape[0], 8, 8)


class NotAttribution(Tool):
    name: ClassVar[str] = "detector"
    family: ClassVar[str] = "detection"


TOOLS = [CornerOracle(), WrongCorner(), Saliency(), EdgeDetector(), Blank(), NaNTool()]


def _rows(track: LocalizeTrack, cases: dict[str, FakeCase], tools: list, seed: int = 0) -> pd.DataFrame:
    """Run every cell the way the runner does: failures are recorded, not raised."""
    rows = []
    for case in cases.values():
        for tool in tools:
            row = dict(case_id=case.id, case_name=case.name, dataset=case.dataset, arch=case.arch)
            row.update(flaw=case.truth().kind, tool=tool.name, family=tool.family, control=tool.control)
            row.update(track=track.name, runtime_s=0.0, peak_mem_mb=0.0)
            try:
                res = track.run(case, tool, seed=seed)
                row.update(status="ok", error="", scores=res.scores, items=res.items, extras=res.extras)
            except EisError as e:
                row.update(status="failed", error=str(e), scores={}, items={}, extras={})
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary(cases: dict[str, FakeCase]) -> pd.DataFrame:
    track = LocalizeTrack(n_inputs=16, n_resamples=500)
    return track.summarize(_rows(track, cases, TOOLS))


# ---- tests -------------------------------------------------------------------------------------------------


def test_registered() -> None:
    load_builtin_tracks()
    cls = TRACKS.get("localize")
    assert cls is LocalizeTrack
    assert (cls.family, cls.headline, cls.higher_is_better) == ("attribution", "pearson", True)


def test_applies_to(cases: dict[str, FakeCase]) -> None:
    track = LocalizeTrack()
    assert track.applies_to(cases["case_a"]) and track.applies_to(cases["case_b"])
    for kind in ("clean", "blend", "warp"):
        assert not track.applies_to(FakeCase("c", kind, cases["case_a"]._state, cases["case_a"]._data))


def test_run_oracle_scores_perfectly(cases: dict[str, FakeCase]) -> None:
    res = LocalizeTrack(n_inputs=12).run(cases["case_a"], CornerOracle(), seed=0)
    assert res.flaw == "patch"
    assert set(res.scores) == set(METRIC_NAMES) == set(res.items)
    for name in METRIC_NAMES:
        best = 0.0 if name in LOWER_IS_BETTER else 1.0
        assert res.scores[name] == pytest.approx(best, abs=1e-9), name
        assert len(res.items[name]) == 12


def test_run_inputs_extras_and_gallery(cases: dict[str, FakeCase]) -> None:
    case = cases["case_a"]
    track = LocalizeTrack(n_inputs=20)
    res = track.run(case, Blank(), seed=3)
    x, y = case.inputs()
    picked = res.extras["input_indices"]
    assert len(picked) == 20 == res.extras["n_inputs"] and picked == sorted(set(picked))
    assert all(int(y[i]) != TARGET for i in picked)  # only eligible inputs
    # target_rate = fraction of triggered inputs classified as the target; the trojan works.
    xt, _ = _paste(x[picked])
    with torch.no_grad():
        want = float((case.model()(xt).argmax(1) == TARGET).float().mean())
    assert res.extras["target_rate"] == pytest.approx(want)
    assert res.extras["target_rate"] > 0.8
    assert res.extras["mask_fraction"] == pytest.approx(16 / 256)
    # blank map scores chance: Pearson 0 (constant map), AUROC 1/2, pointing game = mask fraction
    assert res.scores["pearson"] == 0.0 and res.scores["auroc"] == 0.5
    assert res.scores["pointing_game"] == pytest.approx(16 / 256)
    assert res.scores["l1_distance"] == pytest.approx(16 / 256)  # the blank map's L1 bar: k / P
    # gallery: first three inputs, mask and map in [0, 1]
    assert sorted(res.gallery) == sorted(f"{k}_{i}" for k in ("input", "mask", "map") for i in range(3))
    assert res.gallery["input_0"].shape == (1, SIZE, SIZE)
    assert res.gallery["mask_0"].shape == res.gallery["map_0"].shape == (SIZE, SIZE)
    sal = track.run(case, Saliency(), seed=3).gallery["map_1"]
    assert sal.min() == 0.0 and sal.max() == 1.0
    # same seed -> same inputs and scores; another seed -> other inputs
    again = track.run(case, Blank(), seed=3)
    assert again.extras["input_indices"] == picked and again.items == res.items
    assert track.run(case, Blank(), seed=4).extras["input_indices"] != picked


def test_run_rejects_bad_tool_output(cases: dict[str, FakeCase]) -> None:
    track = LocalizeTrack(n_inputs=4)
    with pytest.raises(EisError, match="non-finite"):
        track.run(cases["case_a"], NaNTool())
    with pytest.raises(EisError, match=r"shape \(4, 8, 8\); expected \(4, 1, 16, 16\) or \(4, 16, 16\)"):
        track.run(cases["case_a"], BadShape())
    with pytest.raises(EisError, match="attribution tools"):
        track.run(cases["case_a"], NotAttribution())
    with pytest.raises(EisError, match="unknown reduction"):
        LocalizeTrack(reduction="mean")


def test_summary_table_shape(summary: pd.DataFrame) -> None:
    want = {"tool", "control", "flaw", "metric", "mean", "lo", "hi", "n", "verdict", "n_failed", "margin"}
    assert want <= set(summary.columns)
    assert set(summary["flaw"]) == {"patch", "spurious", "all"}
    assert len(summary) == 3 * len(TOOLS) * len(METRIC_NAMES)
    ok = summary[summary["n"] > 0]
    assert (ok["lo"] <= ok["mean"]).all() and (ok["mean"] <= ok["hi"]).all()
    pooled = summary[(summary["flaw"] == "all") & (summary["tool"] == "oracle")]
    assert (pooled["n"] == 2).all() and (pooled["n_items"] == 32).all()


def _row(summary: pd.DataFrame, tool: str, flaw: str = "all", metric: str = "pearson") -> pd.Series:
    sel = summary[(summary["tool"] == tool) & (summary["flaw"] == flaw) & (summary["metric"] == metric)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_summary_verdicts(summary: pd.DataFrame) -> None:
    assert _row(summary, "oracle")["verdict"].startswith("beats the edge detector: yes")
    assert _row(summary, "oracle", "patch")["verdict"].startswith("beats the edge detector: yes")
    assert _row(summary, "wrong_corner")["verdict"].startswith("beats the edge detector: no")
    assert _row(summary, "edge_detector")["verdict"] == "control"
    assert _row(summary, "blank_map")["verdict"] == "control"
    assert _row(summary, "oracle")["mean"] == pytest.approx(1.0)
    assert _row(summary, "blank_map")["mean"] == 0.0


def test_summary_margin_over_best_control(summary: pd.DataFrame) -> None:
    edge, blank, oracle = (_row(summary, t) for t in ("edge_detector", "blank_map", "oracle"))
    best = "edge_detector" if edge["mean"] > blank["mean"] else "blank_map"
    assert oracle["best_control"] == best
    best_mean = max(edge["mean"], blank["mean"])
    assert oracle["margin"] == pytest.approx(1.0 - best_mean)
    assert oracle["margin_lo"] <= oracle["margin"] <= oracle["margin_hi"]


def test_summary_l1_distance_is_judged_against_the_blank_map(summary: pd.DataFrame) -> None:
    blank, edge = (
        _row(summary, "blank_map", metric="l1_distance"),
        _row(summary, "edge_detector", metric="l1_distance"),
    )
    assert blank["mean"] == pytest.approx(16 / 256)  # k / P on every input
    oracle = _row(summary, "oracle", metric="l1_distance")
    assert oracle["mean"] == 0.0
    # lower is better: the oracle's difference to the blank map is -1/16 on every input -> "yes"
    assert oracle["verdict"] == "beats the blank map: yes (l1_distance -0.062 [-0.062, -0.062], 2 cases)"
    # the wrong corner: 1 on 16 wrong pixels, 0 on the 16 mask pixels -> 32/256, twice the blank map's
    wrong = _row(summary, "wrong_corner", metric="l1_distance")
    assert wrong["mean"] == pytest.approx(32 / 256)
    assert wrong["verdict"].startswith("beats the blank map: no (l1_distance +0.062")
    assert _row(summary, "wrong_corner", "patch", "l1_distance")["verdict"].startswith(
        "beats the blank map: no"
    )
    # the other metrics keep the edge-detector verdict
    assert _row(summary, "wrong_corner", metric="auroc")["verdict"].startswith("beats the edge detector: no")
    assert blank["verdict"] == edge["verdict"] == "control"
    # the best control for L1 is the one with the lowest distance, and the margin is tool - that control
    assert edge["mean"] > blank["mean"]
    assert oracle["best_control"] == "blank_map" and oracle["margin"] == pytest.approx(-16 / 256)
    assert wrong["margin"] == pytest.approx(16 / 256)


def test_l1_verdict_without_blank_map(cases: dict[str, FakeCase]) -> None:
    track = LocalizeTrack(n_inputs=4, n_resamples=100)
    r = track.summarize(_rows(track, cases, [CornerOracle(), EdgeDetector()]))
    assert (
        _row(r, "oracle", metric="l1_distance")["verdict"] == "beats the blank map: n/a (blank_map not run)"
    )
    assert _row(r, "oracle", metric="l1_distance")["best_control"] == "edge_detector"
    assert _row(r, "oracle")["verdict"].startswith("beats the edge detector: yes")


def test_summary_counts_failures(summary: pd.DataFrame) -> None:
    nan_row = _row(summary, "nan_tool")
    assert nan_row["n_failed"] == 2 and nan_row["n"] == 0 and math.isnan(nan_row["mean"])
    assert nan_row["verdict"].startswith("beats the edge detector: n/a")
    assert _row(summary, "nan_tool", "patch")["n_failed"] == 1
    assert (summary.loc[summary["tool"] == "oracle", "n_failed"] == 0).all()


def test_summary_pairs_only_same_inputs(cases: dict[str, FakeCase]) -> None:
    track = LocalizeTrack(n_inputs=8, n_resamples=200)
    one = {"case_a": cases["case_a"]}
    rows = pd.concat(
        [_rows(track, one, [CornerOracle()], seed=0), _rows(track, one, [EdgeDetector()], seed=1)]
    )
    r = track.summarize(rows)
    oracle = r[(r["tool"] == "oracle") & (r["flaw"] == "all") & (r["metric"] == "pearson")].iloc[0]
    assert oracle["verdict"] == "beats the edge detector: n/a"  # seeds differ: no case can be paired
    assert np.isnan(oracle["margin"])


def test_failed_cells_without_flaw_take_it_from_their_case(cases: dict[str, FakeCase]) -> None:
    track = LocalizeTrack(n_inputs=4, n_resamples=100)
    rows = _rows(track, cases, [EdgeDetector(), NaNTool()])
    rows.loc[rows["status"] == "failed", "flaw"] = ""  # a runner may not know the flaw of a failed cell
    r = track.summarize(rows)
    assert set(r["flaw"]) == {"patch", "spurious", "all"}
    assert _row(r, "nan_tool", "patch")["n_failed"] == 1
    assert _row(r, "nan_tool", "all")["n_failed"] == 2
