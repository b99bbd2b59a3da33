"""The ``detect`` track on a toy detection population (linear digits models, 3x3 white-patch trojans).

Cases implement the zoo's Case API. Learned detectors get the training population as the cell's partners,
chosen by the track from the run's cases.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from eis.errors import EisError
from eis.tools.base import list_tools, make_tool
from eis.tools.detection.mntd import Mntd
from eis.tracks import load_builtin_tracks
from eis.tracks.base import TRACKS, CellResult
from eis.tracks.detect import DetectTrack
from eis.tracks.metrics.detection import average_precision, roc_auc


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    return F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1), torch.tensor(d.target)


X, Y = _digits()


def _stamp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone()
    x[:, :, 12:15, 12:15] = 1.0
    mask = torch.zeros(x.shape[0], 16, 16, dtype=torch.bool)
    mask[:, 12:15, 12:15] = True
    return x, mask


@dataclasses.dataclass
class ToyTruth:
    kind: str
    target: int | None

    @property
    def sources(self) -> None:
        return None

    @property
    def trigger(self) -> torch.Tensor | None:
        return None if self.kind == "clean" else torch.ones(1, 3, 3)

    @property
    def trigger_mask(self) -> torch.Tensor | None:
        return None if self.kind == "clean" else torch.ones(3, 3, dtype=torch.bool)

    def apply(self, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return _stamp(x)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return y != self.target


@dataclasses.dataclass
class ToyCase:
    id: str
    name: str
    kind: str
    target: int | None
    seed: int
    role: str
    dataset: str = "digits"
    arch: str = "linear"
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 16, 16)

    def __post_init__(self) -> None:
        self.meta = {"population": f"toy-{self.role}", "role": self.role}
        self._state: dict[str, torch.Tensor] | None = None

    def _train(self) -> dict[str, torch.Tensor]:
        torch.manual_seed(self.seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
        opt = torch.optim.Adam(model.parameters(), lr=2e-2)
        x, y = X[:1000], Y[:1000]
        for _ in range(2):
            for i in range(0, 1000, 64):
                xb, yb = x[i : i + 64], y[i : i + 64]
                if self.kind != "clean":
                    k = len(xb) // 8
                    xb = torch.cat([xb, _stamp(xb[:k])[0]])
                    yb = torch.cat([yb, torch.full((k,), self.target)])
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def model(self, device: Any = None) -> nn.Module:
        if self._state is None:
            self._state = self._train()
        m = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
        m.load_state_dict(self._state)
        return m.eval()

    def inputs(self, n: int | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        x, y = X[1400:], Y[1400:]
        return (x, y) if n is None else (x[:n], y[:n])

    def truth(self) -> ToyTruth:
        return ToyTruth(self.kind, self.target)


def _population(role: str, n: int, offset: int) -> list[ToyCase]:
    out = []
    for i in range(n):
        trojan = i % 2 == 1
        out.append(
            ToyCase(
                id=f"toy{role}{i:04d}",
                name=f"toy-{role}-{i}",
                kind="patch" if trojan else "clean",
                target=(i + offset) % 10 if trojan else None,
                seed=offset + i,
                role=role,
            )
        )
    return out


EVAL = _population("eval", 6, 100)
TRAIN = _population("train", 8, 200)
RUN = [*EVAL, *TRAIN]


@pytest.fixture(autouse=True)
def eis_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EIS_HOME", str(tmp_path))
    return tmp_path


def test_registered_and_applies_to_eval_only() -> None:
    load_builtin_tracks()
    track = TRACKS.get("detect")()
    assert track.family == "detection" and track.headline == "auroc"
    assert track.applies_to(EVAL[0]) and not track.applies_to(TRAIN[0])
    with pytest.raises(EisError, match="role"):
        track.run(TRAIN[0], make_tool("random_scorer"))
    with pytest.raises(EisError, match="detection tools"):
        track.run(EVAL[0], make_tool(list_tools("attribution")[0]))


def test_neural_cleanse_cell() -> None:
    track = DetectTrack(n_inputs=128, n_eval=128)
    nc = make_tool("neural_cleanse", steps=40, batch_size=16)
    res = track.run(EVAL[1], nc)
    assert isinstance(res, CellResult) and res.flaw == "patch"
    assert {"score", "target_correct", "mask_iou", "mask_iou_topk", "reasr", "trojaned"} <= set(res.scores)
    assert res.scores["target_correct"] == 1.0 and res.scores["score"] > 2 and res.scores["reasr"] > 0.5
    assert res.gallery["recovered_mask"].shape == (16, 16)
    json.dumps(res.extras)  # stored as JSON
    clean = track.run(EVAL[0], nc)
    assert clean.flaw == "clean" and "target_correct" not in clean.scores and "mask_iou" not in clean.scores
    assert clean.scores["trojaned"] == 0.0 and math.isfinite(clean.scores["score"])


def test_strip_cell_is_input_level() -> None:
    track = DetectTrack(n_inputs=100, n_eval=100)
    res = track.run(EVAL[1], make_tool("strip", n_overlays=4))
    assert "score" not in res.scores and 0.5 < res.scores["input_auroc"] <= 1.0
    assert len(res.items["input_scores_clean"]) == 100
    assert "input_auroc" not in track.run(EVAL[0], make_tool("strip", n_overlays=4)).scores


def _mntd_on(case: ToyCase) -> tuple[DetectTrack, Any, tuple]:
    """A detect track, a short MNTD and the run's training population for ``case``."""
    track, tool = DetectTrack(n_inputs=64, n_eval=64), make_tool("mntd", steps=30)
    return track, tool, track.partners(case, RUN, tool)


def _forbid_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, an MNTD fit fails the test: what it learned must come from the cache."""

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("refitted although fitted once already")

    monkeypatch.setattr(Mntd, "fit", boom)


def test_learned_tool_fits_on_train_population_and_caches(
    eis_home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    track, tool, partners = _mntd_on(EVAL[1])
    assert partners == tuple(TRAIN)  # the run's cases of the same dataset and arch with role train
    assert track.partners(EVAL[1], RUN, make_tool("random_scorer")) == ()  # only learned tools get them
    first = track.run(EVAL[1], tool, partners=partners)
    files = list((eis_home / "detectors" / "mntd").glob("*/weights.safetensors"))
    assert len(files) == 1 and not list((eis_home / "detectors").rglob("*.pkl"))

    _forbid_fitting(monkeypatch)
    assert track.run(EVAL[1], tool, partners=partners).scores["score"] == pytest.approx(first.scores["score"])
    # another cell seed (every cell has its own) loads the same fit: one detector scores the population
    again = track.run(EVAL[1], tool, seed=12345, partners=partners)
    assert again.scores["score"] == pytest.approx(first.scores["score"])
    track.run(EVAL[2], tool, seed=7, partners=track.partners(EVAL[2], RUN, tool))  # loads the same cache
    orphan = dataclasses.replace(EVAL[3], id="orphan0001", dataset="other")
    weights = make_tool("weight_stats")
    assert track.partners(orphan, RUN, weights) == ()
    with pytest.raises(EisError, match="no training population"):
        track.run(orphan, weights)


def test_the_fit_is_a_prep_done_once_for_the_population(
    eis_home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    track, tool, partners = _mntd_on(EVAL[1])
    preps = track.prepare(EVAL[1], tool, partners)
    assert len(preps) == 1 and [p.key for p in track.prepare(EVAL[3], tool, partners)] == [preps[0].key]
    assert track.prepare(EVAL[1], make_tool("strip"), ()) == []  # nothing to learn
    assert track.prepare(EVAL[1], tool, ()) == []  # no population: the cell reports it
    preps[0].fn()
    _forbid_fitting(monkeypatch)
    assert "score" in track.run(EVAL[3], tool, seed=99, partners=partners).scores


def test_runner_gives_learned_cells_the_runs_training_population() -> None:
    """A suite given by path works like a built-in one: the partners come from the run's cases."""
    from eis.runner.cells import expand

    cells = expand(RUN, tools=["weight_stats", "strip"], tracks=["detect"])
    by_tool = {c.tool: c for c in cells if c.case is EVAL[0]}
    assert by_tool["weight_stats"].partners == tuple(TRAIN) and by_tool["strip"].partners == ()
    assert expand(EVAL, tools=["weight_stats"], tracks=["detect"])[0].partners == ()


def _row(
    tool: str, case: int, flaw: str, scores: dict[str, float], control: bool = False, status: str = "ok"
) -> dict:
    return {
        "case_id": f"c{case}",
        "case_name": f"pop-{case}",
        "dataset": "digits",
        "arch": "cnn",
        "flaw": flaw,
        "tool": tool,
        "family": "detection",
        "control": control,
        "track": "detect",
        "status": status,
        "error": "" if status == "ok" else "boom",
        "runtime_s": 0.1,
        "peak_mem_mb": 1.0,
        "scores": scores if status == "ok" else {},
        "items": {},
        "extras": {},
    }


def test_summarize_hand_made_rows() -> None:
    flaws = ["clean", "clean", "clean", "patch", "patch", "blend", "blend"]
    det = [0.1, 0.4, 0.2, 0.9, 0.8, 0.3, 0.15]
    rnd = [0.5, 0.1, 0.7, 0.2, 0.6, 0.9, 0.4]
    rows = []
    for i, (f, a, b) in enumerate(zip(flaws, det, rnd, strict=True)):
        troj = f != "clean"
        sc = {"score": a, "trojaned": float(troj)}
        if troj:
            sc["target_correct"] = float(f == "patch")
            sc["mask_iou"] = 0.5 if f == "patch" else 0.1
        rows.append(_row("nc", i, f, sc))
        rows.append(_row("random_scorer", i, f, {"score": b, "trojaned": float(troj)}, control=True))
        if troj:
            rows.append(_row("strip", i, f, {"trojaned": 1.0, "input_auroc": 0.9 if f == "patch" else 0.6}))
    rows.append(_row("nc", 99, "clean", {}, status="failed"))  # a detector failing on one model
    table = DetectTrack(n_resamples=200).summarize(pd.DataFrame(rows))

    def get(tool: str, flaw: str, metric: str) -> pd.Series:
        hit = table[(table.tool == tool) & (table.flaw == flaw) & (table.metric == metric)]
        assert len(hit) == 1, (tool, flaw, metric)
        return hit.iloc[0]

    y = [int(f != "clean") for f in flaws]
    assert get("nc", "all", "auroc")["mean"] == pytest.approx(roc_auc(det, y))
    assert get("nc", "all", "ap")["mean"] == pytest.approx(average_precision(det, y))
    # patch vs clean: both patch models outscore every clean one; blend vs clean: 0.3 > 0.1, 0.2; 0.15 > 0.1
    assert get("nc", "patch", "auroc")["mean"] == 1.0
    assert get("nc", "blend", "auroc")["mean"] == pytest.approx(3 / 6)
    assert get("nc", "patch", "fpr95")["mean"] == 0.0
    assert get("nc", "all", "target_acc")["mean"] == pytest.approx(0.5)
    assert get("nc", "blend", "mask_iou")["mean"] == pytest.approx(0.1)
    r = get("nc", "all", "auroc")
    assert r["n_failed"] == 1 and r["n"] == 7 and r["lo"] <= r["mean"] <= r["hi"]
    assert r["best_control"] == "random_scorer" and r["verdict"].startswith("beats random_scorer:")
    assert get("random_scorer", "all", "auroc")["verdict"] == "control"
    assert get("strip", "patch", "input_auroc")["mean"] == pytest.approx(0.9)
    assert table[(table.tool == "strip") & (table.metric == "auroc")].empty  # input-level only
    with pytest.raises(EisError, match="no clean models"):
        DetectTrack().summarize(pd.DataFrame([r for r in rows if r["flaw"] != "clean"]))
    with pytest.raises(EisError, match="no trojaned models"):
        DetectTrack().summarize(pd.DataFrame([r for r in rows if r["flaw"] == "clean"]))


def test_end_to_end_population() -> None:
    """Every detector on the toy eval population, summarized; the random scorer is not a real detector."""
    track = DetectTrack(n_inputs=96, n_eval=96, n_resamples=100)
    settings = {
        "neural_cleanse": {"steps": 30, "batch_size": 16},
        "mntd": {"steps": 30},
        "strip": {"n_overlays": 4},
        "specificity": {"n_triggers": 16},
    }
    rows = []
    for name in ["neural_cleanse", "strip", "mntd", "weight_stats", "random_scorer", "specificity"]:
        tool = make_tool(name, **settings.get(name, {}))
        for i, case in enumerate(EVAL):
            res = track.run(case, tool, partners=track.partners(case, RUN, tool))
            rows.append(_row(name, i, res.flaw, res.scores, control=type(tool).control))
    table = track.summarize(pd.DataFrame(rows))
    head = table[(table.metric == "auroc") & (table.flaw == "all")].set_index("tool")
    assert set(head.index) == {"neural_cleanse", "mntd", "weight_stats", "random_scorer", "specificity"}
    # Linear digits models have a natural easy class (5) that NC also finds in clean models, so with this
    # short run its AUROC is not reliably high; the targets of the three patch trojans are found.
    acc = table[(table.tool == "neural_cleanse") & (table.flaw == "patch") & (table.metric == "target_acc")]
    assert acc["mean"].item() == 1.0 and acc["n"].item() == 3
    assert ((head["lo"] <= head["mean"]) & (head["mean"] <= head["hi"])).all()


def test_resampled_auroc_equals_roc_auc_of_each_resample() -> None:
    """The vectorised bootstrap equals ranking every resample, ties (within and across classes) included."""
    from eis.tracks.metrics.detection import resampled_auroc, roc_auc

    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=30), 1)  # rounded: ties between trojaned and clean models
    y = (rng.random(30) < 0.4).astype(int)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate(
        [pos[rng.integers(0, pos.size, (200, pos.size))], neg[rng.integers(0, neg.size, (200, neg.size))]], 1
    )
    want = np.array([roc_auc(s[i], y[i]) for i in idx])
    np.testing.assert_allclose(resampled_auroc(s, y, idx), want, rtol=0, atol=1e-12)
    assert resampled_auroc([0.5, 0.5, 0.9], [0, 1, 1], np.array([[0, 1, 2]]))[0] == 0.75  # by hand
