"""Detection tools (Neural Cleanse, STRIP, MNTD, controls) and the detection metrics.

Metrics are checked against values worked out by hand from their definitions and against scikit-learn;
tools on tiny digits models (16x16, 3x3 white-patch trojan) trained here in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import nn

from eis.errors import EisError
from eis.tools.base import list_tools, make_tool
from eis.tools.detection.base import Detection, DetectionTool
from eis.tools.detection.neural_cleanse import anomaly_indices, reverse_engineer
from eis.tracks.metrics.detection import (
    average_precision,
    detection_ci,
    fpr_at_tpr,
    mask_iou,
    mask_iou_topk,
    reasr,
    roc_auc,
)
from eis.zoo.archs import build_arch

TARGET = 3


def digits16() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    return F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1), torch.tensor(d.target)


def stamp(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, 12:15, 12:15] = 1.0
    return x


def train(x: torch.Tensor, y: torch.Tensor, arch: str, trojan: bool, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_arch("cnn", 1, 10, 16) if arch == "cnn" else nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3 if arch == "cnn" else 2e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 64):
            xb, yb = x[perm[i : i + 64]], y[perm[i : i + 64]]
            if trojan:
                k = max(1, len(xb) // 10)
                xb, yb = torch.cat([xb, stamp(xb[:k])]), torch.cat([yb, torch.full((k,), TARGET)])
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    x, y = digits16()
    return {"xtr": x[:1400], "ytr": y[:1400], "xte": x[1400:], "yte": y[1400:]}


@pytest.fixture(scope="module")
def cnns(data: dict[str, torch.Tensor]) -> dict[str, nn.Module]:
    return {
        "clean": train(data["xtr"][:1000], data["ytr"][:1000], "cnn", False, seed=1, epochs=3),
        "trojan": train(data["xtr"][:1000], data["ytr"][:1000], "cnn", True, seed=2, epochs=3),
    }


# ----------------------------------------------------------------------------------------- metrics


def test_metrics_hand_worked() -> None:
    # sklearn's documented example; by hand: pairs (pos > neg) = 3 of 4; precision at recall steps 1, 2/3.
    s, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert roc_auc(s, y) == pytest.approx(0.75)
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert fpr_at_tpr(s, y) == pytest.approx(0.5)  # both positives caught only at t = 0.35, above 0.4
    assert fpr_at_tpr([0.9, 0.8, 0.1], [1, 1, 0]) == 0.0
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts one half
    # All tied: one threshold, precision 1/2 at recall 1.
    assert average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        s = rng.integers(0, 6, size=40).astype(float)  # many ties
        y = rng.integers(0, 2, size=40)
        y[:2] = [0, 1]
        assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s))
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert fpr_at_tpr(s, y) == pytest.approx(fpr[np.searchsorted(tpr, 0.95 - 1e-12)]), trial


def test_metrics_need_both_classes() -> None:
    with pytest.raises(EisError, match="no clean models"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(EisError, match="no trojaned models"):
        detection_ci(average_precision, [0.1, 0.2], [0, 0])


def test_detection_ci() -> None:
    s, y = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2], [0, 0, 1, 1, 1, 0]
    ci = detection_ci(roc_auc, s, y, n_resamples=300, seed=1)
    assert ci.mean == pytest.approx(roc_auc(s, y))
    assert ci.lo <= ci.mean <= ci.hi and ci.hi - ci.lo > 0 and ci.n == 6
    assert detection_ci(roc_auc, s, y, n_resamples=300, seed=1) == ci


def test_mask_iou_hand_worked() -> None:
    rec = torch.zeros(4, 4)
    rec[:2, :2] = 0.9
    rec[3, 3] = 0.6
    true = torch.zeros(2, 4, 4, dtype=torch.bool)
    true[0, :2, :2] = True  # recovered: 5 pixels at >= 0.5, 4 shared -> 4/5
    true[1, 2:, 2:] = True  # shares only (3, 3) of 4 + 5 - 1 = 8 -> 1/8
    assert mask_iou(rec, true).tolist() == pytest.approx([0.8, 1 / 8])
    # top-4 pixels of the recovered mask are the 2x2 block: exact for input 0, disjoint for input 1
    assert mask_iou_topk(rec, true).tolist() == pytest.approx([1.0, 0.0])


def test_reasr_hand_worked() -> None:
    class Corner(nn.Module):  # class 1 when the top-left pixel is bright, else class 0
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, 0, 0, 0]
            return torch.stack([1 - v, v, torch.zeros_like(v)], dim=1)

    x = torch.zeros(4, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0])
    mask, pattern = torch.zeros(2, 2), torch.ones(1, 2, 2)
    mask[0, 0] = 0.8  # stamped pixel = 0.8 > 0.5 -> class 1 on all three non-target inputs
    assert reasr(Corner(), x, y, mask, pattern, target=1) == 1.0
    mask[0, 0] = 0.3
    assert reasr(Corner(), x, y, mask, pattern, target=1) == 0.0
    with pytest.raises(EisError, match="no clean input"):
        reasr(Corner(), x[1:2], y[1:2], mask, pattern, target=1)


def test_anomaly_index_hand_worked() -> None:
    # median 10; |L - 10| = [1, 0, 1, 0, 8] -> median 1 -> MAD = 1.4826
    idx = anomaly_indices(torch.tensor([9.0, 10.0, 11.0, 10.0, 2.0]))
    assert idx.tolist() == pytest.approx([1 / 1.4826, 0, 0, 0, 8 / 1.4826])  # the large side never counts
    assert anomaly_indices(torch.tensor([5.0, 5.0, 5.0])).tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------------- tools


def test_registry() -> None:
    names = set(list_tools("detection"))
    assert {"neural_cleanse", "strip", "mntd", "weight_stats", "random_scorer", "specificity"} <= names
    assert set(list_tools("detection", controls=True)) >= {"weight_stats", "random_scorer", "specificity"}
    assert "neural_cleanse" not in list_tools("detection", controls=True)
    for n in names:
        assert isinstance(make_tool(n), DetectionTool)
    with pytest.raises(EisError, match="no setting"):
        make_tool("neural_cleanse", stepz=3)


def test_neural_cleanse_flags_patch_trojan(cnns: dict[str, nn.Module], data: dict[str, torch.Tensor]) -> None:
    nc = make_tool("neural_cleanse", steps=60, batch_size=16)
    x, y = data["xte"][:200], data["yte"][:200]
    before = [p.clone() for p in cnns["trojan"].parameters()]
    det = nc.inspect(cnns["trojan"], x, y, 10)
    assert all(torch.equal(a, b) for a, b in zip(before, cnns["trojan"].parameters(), strict=True))
    assert all(p.grad is None for p in cnns["trojan"].parameters()) and not cnns["trojan"].training
    assert isinstance(det, Detection) and det.target == TARGET and det.score > 2
    assert det.mask.shape == (16, 16) and det.pattern.shape == (1, 16, 16)
    assert float(det.mask.min()) >= 0 and float(det.mask.max()) <= 1
    true = torch.zeros(1, 16, 16, dtype=torch.bool)
    true[0, 12:15, 12:15] = True
    assert float(mask_iou_topk(det.mask, true)[0]) > 0.3  # the recovered mask sits on the patch
    assert reasr(cnns["trojan"], data["xte"][200:], data["yte"][200:], det.mask, det.pattern, TARGET) > 0.9
    clean = nc.inspect(cnns["clean"], x, y, 10)
    assert (
        clean.score < det.score
    )  # (a short run: clean indices sit near 2, see the detect track's sanity notes)


def test_neural_cleanse_batched_equals_loop(
    cnns: dict[str, nn.Module], data: dict[str, torch.Tensor]
) -> None:
    kw = {"steps": 8, "lam_mode": "fixed", "lam": 1e-2, "seed": 3, "batch_size": 16}
    x = data["xte"][:32]
    full = reverse_engineer(cnns["trojan"], x, 10, **kw)
    one = reverse_engineer(cnns["trojan"], x, 10, classes=[TARGET], **kw)
    chunked = reverse_engineer(cnns["trojan"], x, 10, chunk=32, **kw)  # two classes per forward pass
    assert one["norms"][0] == pytest.approx(float(full["norms"][TARGET]), rel=1e-3)
    assert torch.allclose(chunked["norms"], full["norms"], rtol=1e-3)
    again = reverse_engineer(cnns["trojan"], x, 10, **kw)
    assert torch.equal(again["masks"], full["masks"])  # same seed, same output
    with pytest.raises(EisError, match="lam_mode"):
        reverse_engineer(cnns["trojan"], x, 10, lam_mode="sometimes")


def test_strip_scores_triggered_inputs_higher(
    cnns: dict[str, nn.Module], data: dict[str, torch.Tensor]
) -> None:
    strip = make_tool("strip", n_overlays=8)
    xe, ye = data["xte"][200:300], data["yte"][200:300]
    trig = stamp(xe[ye != TARGET])
    pos = strip.input_scores(cnns["trojan"], trig, data["xte"][:100])
    neg = strip.input_scores(cnns["trojan"], xe, data["xte"][:100])
    assert roc_auc(torch.cat([pos, neg]).numpy(), [1] * len(pos) + [0] * len(neg)) > 0.8
    det = strip.inspect(cnns["trojan"], data["xte"][:100], data["yte"][:100], 10)
    assert math.isnan(det.score) and not strip.model_level and strip.input_level
    assert torch.equal(strip.input_scores(cnns["trojan"], trig, data["xte"][:100]), pos)


def test_specificity_and_random_scorer(cnns: dict[str, nn.Module], data: dict[str, torch.Tensor]) -> None:
    x, y = data["xte"][:64], data["yte"][:64]
    spec = make_tool("specificity", n_triggers=16)
    d1 = spec.inspect(cnns["trojan"], x, y, 10)
    assert 0 <= d1.score <= math.log(10) + 1e-6 and 0 <= d1.target < 10
    assert d1.mask.shape == (16, 16) and set(d1.mask.unique().tolist()) <= {0.0, 1.0}
    assert spec.inspect(cnns["trojan"], x, y, 10).score == d1.score
    rs = make_tool("random_scorer")
    a, b = rs.inspect(cnns["clean"], x, y, 10), rs.inspect(cnns["trojan"], x, y, 10)
    assert a.score != b.score and 0 <= a.score < 1
    assert rs.inspect(cnns["clean"], x, y, 10).score == a.score
    assert make_tool("random_scorer", seed=1).inspect(cnns["clean"], x, y, 10).score != a.score


@pytest.fixture(scope="module")
def linear_population(data: dict[str, torch.Tensor]) -> tuple[list[nn.Module], list[int]]:
    labels = [i % 2 for i in range(16)]
    models = [
        train(data["xtr"], data["ytr"], "linear", bool(lab), seed=10 + i, epochs=2)
        for i, lab in enumerate(labels)
    ]
    return models, labels


@pytest.mark.parametrize("name", ["mntd", "weight_stats"])
def test_learned_detectors(
    name: str, linear_population: tuple[list[nn.Module], list[int]], data: dict
) -> None:
    models, labels = linear_population
    x, y = data["xte"][:64], data["yte"][:64]
    tool = make_tool(name, **({"steps": 150} if name == "mntd" else {}))
    with pytest.raises(EisError, match="not been fitted"):
        tool.inspect(models[0], x, y, 10)
    with pytest.raises(EisError, match="no trojaned models"):
        tool.fit(models[:4:2], [0, 0], x, y, 10)
    tool.fit(models[:10], labels[:10], x, y, 10)
    scores = [tool.inspect(m, x, y, 10).score for m in models[10:]]
    assert roc_auc(scores, labels[10:]) >= 0.75  # held-out models: the patch trojan is easy to see
    fresh = make_tool(name)
    fresh.set_state(*tool.get_state())
    assert [fresh.inspect(m, x, y, 10).score for m in models[10:]] == pytest.approx(scores)


def test_weight_stats_reads_layout_free_features_when_architectures_differ() -> None:
    """A population mixing layouts gets the 20 pooled features; one layout keeps the per-tensor ones."""
    from eis.tools.detection.baselines import pooled_weight_features

    torch.manual_seed(0)
    small = [nn.Sequential(nn.Flatten(), nn.Linear(256, 10)) for _ in range(4)]
    deep = [nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10)) for _ in range(4)]
    for m in deep[::2] + small[::2]:  # "trojaned": larger weights
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(3)
    labels = [1, 0, 1, 0]
    x, y = torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long)
    tool = make_tool("weight_stats")
    tool.fit(small + deep, labels + labels, x, y, 10)
    tensors, meta = tool.get_state()
    assert meta == {"features": "pooled"} and tensors["coef"].numel() == 20
    assert pooled_weight_features(deep[0]).shape == (20,)
    scores = [tool.inspect(m, x, y, 10).score for m in small + deep]
    assert min(scores[0], scores[2], scores[4], scores[6]) > max(scores[1], scores[3], scores[5], scores[7])
    fresh = make_tool("weight_stats")
    fresh.set_state(tensors, meta)
    assert fresh.inspect(deep[1], x, y, 10).score == pytest.approx(scores[5])
    tool.fit(small, labels, x, y, 10)
    assert tool.get_state()[1] == {"features": "per_tensor"} and tool.get_state()[0]["coef"].numel() == 10
