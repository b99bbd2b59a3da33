"""Model randomisation and the sanity track, including Adebayo et al.'s qualitative result on a zoo CNN."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError
from eis.tools.base import make_tool
from eis.tracks import load_builtin_tracks, randomize
from eis.tracks.base import TRACKS
from eis.tracks.sanity import SanityTrack, data_randomization, model_randomization, passes
from eis.zoo.archs import SmallCNN, build_arch
from eis.zoo.datasets import get_dataset


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    """The zoo's cnn (narrowed to width 16 for speed) trained 2 epochs on digits: ~85% test accuracy."""
    data = get_dataset("digits")
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 16, width=16)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        perm = torch.randperm(len(data.train_x), generator=g)
        for i in range(0, len(perm), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(model(data.train_x[b]), data.train_y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert acc > 0.7
    return model, data.test_x[:24]


def test_layer_order_and_head() -> None:
    x = torch.rand(1, 3, 32, 32)
    cnn = build_arch("cnn", 3, 10, 32)
    assert randomize.parameterised_layers(cnn, x) == [
        "features.0", "features.3", "features.6", "classifier.2", "classifier.4",
    ]  # fmt: skip
    assert randomize.head_layers(cnn, x) == ["classifier.2", "classifier.4"]
    res = build_arch("resnet", 3, 10, 32).eval()
    layers = randomize.parameterised_layers(res, x)
    assert layers[:4] == ["stem.0", "stem.1", "layer1.conv1", "layer1.bn1"]
    assert layers[-3:] == ["layer3.shortcut.0", "layer3.shortcut.1", "fc"]
    assert len(layers) == len(
        {n for n, m in res.named_modules() if next(m.parameters(False), None) is not None}
    )
    assert randomize.head_layers(res, x) == ["fc"]
    assert randomize.top_layers(cnn, x) == ["features.6", "classifier.2", "classifier.4"]
    assert randomize.top_layers(res, x) == layers[-10:] and layers[-10] == "layer2.bn2"


def test_randomize_layers_copy_seed_and_scale() -> None:
    torch.manual_seed(0)
    model = build_arch("cnn", 1, 10, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = randomize.randomize_layers(model, ["features.3", "classifier.4"], seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    for k, v in r.state_dict().items():
        changed = not torch.equal(before[k], v)
        assert changed == (k.startswith("features.3.") or k.startswith("classifier.4.")), k
    w0, w1 = before["features.3.weight"], r.state_dict()["features.3.weight"]
    assert abs(w1.std() / w0.std() - 1) < 0.25 and abs(float(w1.mean() - w0.mean())) < 0.01
    again = randomize.randomize_layers(model, ["features.3", "classifier.4"], seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in r.state_dict().items())
    other = randomize.randomize_layers(model, ["features.3"], seed=4)
    assert not torch.equal(other.state_dict()["features.3.weight"], w1)
    # the top layer gets the same random weights in every cascading step and in the independent run
    layers = randomize.parameterised_layers(model, torch.rand(1, 1, 16, 16))
    tops = [m.state_dict()["classifier.4.weight"] for _, m in randomize.cascading(model, layers, seed=3)]
    assert [n for n, _ in randomize.cascading(model, layers)] == layers[::-1]
    assert all(torch.equal(t, w) for t in tops[1:] for w in [tops[0], r.state_dict()["classifier.4.weight"]])
    indep = dict(randomize.independent(model, layers, seed=3))
    assert torch.equal(indep["features.0"].state_dict()["features.3.weight"], before["features.3.weight"])
    with pytest.raises(EisError, match="no layer"):
        randomize.randomize_layers(model, ["features.9"])


def test_paper_result_guided_backprop_fails_saliency_and_gradcam_pass(trained) -> None:
    """Adebayo et al. 2018: Guided Backprop is invariant to the top layers; Saliency and Grad-CAM are not."""
    model, x = trained
    verdicts, top = {}, {}
    for name in ("saliency", "gradcam", "guided_backprop"):
        res = model_randomization(
            make_tool(name), model, x, modes=("cascading",), metrics=("spearman_abs",), depth=1
        )
        assert list(res.cascading) == ["classifier.4", "classifier.2", "features.6"]  # the top half
        top[name] = res.top_similarity()["spearman_abs"]
        verdicts[name] = passes(top[name])
    assert verdicts == {"saliency": True, "gradcam": True, "guided_backprop": False}, {
        k: float(v.mean()) for k, v in top.items()
    }
    assert top["guided_backprop"].mean() > 0.75
    assert top["saliency"].mean() < 0.5 and top["gradcam"].mean() < 0.5


def test_model_randomization_structure(trained) -> None:
    model, x = trained
    res = model_randomization(make_tool("saliency"), model, x[:6], seed=1, metrics=("spearman_abs", "ssim"))
    assert res.layers == ["features.0", "features.3", "features.6", "classifier.2", "classifier.4"]
    assert list(res.cascading) == res.layers[::-1] and list(res.independent) == res.layers[::-1]
    assert res.head == ["classifier.2", "classifier.4"]
    assert res.top == ["features.6", "classifier.2", "classifier.4"]
    assert res.top_similarity() is res.cascading["features.6"]
    assert set(res.all_similarity()) == {"spearman_abs", "ssim"}
    assert res.maps["original"].shape[0] == 6 and set(res.maps) == {
        "original",
        "randomised_top",
        "randomised_all",
    }
    # randomising everything decorrelates more than randomising the top layer alone
    assert res.all_similarity()["spearman_abs"].mean() < res.cascading["classifier.4"]["spearman_abs"].mean()


def test_data_randomization(trained) -> None:
    model, x = trained
    tool = make_tool("saliency")
    same = data_randomization(tool, model, model, x[:6])
    assert all(torch.allclose(v, torch.ones(6, dtype=torch.float64)) for v in same.values())
    torch.manual_seed(5)
    untrained = SmallCNN(1, 10, 16, width=16).eval()  # stands in for a permuted-label model
    diff = data_randomization(tool, model, untrained, x[:6])
    assert diff["spearman_abs"].mean() < 0.9


def test_passes_threshold() -> None:
    assert passes([0.1, 0.2, 0.15, 0.12])
    assert not passes([0.9, 0.8, 0.95])
    assert not passes([0.45, 0.55, 0.48, 0.52])  # mean below 0.5 but not significantly
    assert not passes([0.1])  # one input says nothing about noise


@dataclasses.dataclass
class _Truth:
    kind: str


class _Case:
    def __init__(self, model: nn.Module, x: torch.Tensor, kind: str = "clean", name: str = "c0") -> None:
        self.id = self.name = name
        self.dataset, self.arch, self.num_classes, self.input_shape = "digits", "cnn", 10, (1, 16, 16)
        self.meta: dict[str, Any] = {}
        self._model, self._x, self._kind = model, x, kind

    def model(self, device: str | None = None) -> nn.Module:
        return self._model

    def inputs(self, n: int | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        x = self._x if n is None else self._x[:n]
        return x, torch.zeros(len(x), dtype=torch.long)

    def truth(self) -> _Truth:
        return _Truth(self._kind)


def test_track_run_and_summarize(trained) -> None:
    load_builtin_tracks()
    assert TRACKS.get("sanity") is SanityTrack
    model, x = trained
    track = SanityTrack()
    case = _Case(model, x[:8])
    assert track.applies_to(case) and not track.applies_to(_Case(model, x, kind="patch"))
    rows = []
    for tool in ("gradcam", "guided_backprop"):
        cell = track.run(case, make_tool(tool), seed=0)
        assert cell.flaw == "clean"
        assert len(cell.items["spearman_abs_top"]) == 8
        assert cell.scores["spearman_abs_top"] == pytest.approx(sum(cell.items["spearman_abs_top"]) / 8)
        curves = cell.extras["cascading"]["spearman_abs"]
        assert len(curves["mean"]) == 5 and all(
            lo <= m <= hi for lo, m, hi in zip(curves["lo"], curves["mean"], curves["hi"], strict=True)
        )
        assert cell.extras["layers_top_down"][0] == "classifier.4"
        assert cell.gallery["original"].shape == (16, 16) and cell.gallery["randomised_top"].min() >= 0
        rows.append(
            dict(case_id="c0", case_name="c0", dataset="digits", arch="cnn", flaw=cell.flaw, tool=tool,
                 family="attribution", control=False, track="sanity", status="ok", error="", runtime_s=1.0,
                 peak_mem_mb=1.0, scores=cell.scores, items=cell.items, extras=cell.extras)
        )  # fmt: skip
    table = track.summarize(pd.DataFrame(rows))
    assert {"tool", "control", "flaw", "metric", "mean", "lo", "hi", "n", "verdict"} <= set(table.columns)
    head = table[(table.metric == "spearman_abs_top") & (table.flaw == "all")].set_index("tool")
    assert head.loc["gradcam", "verdict"] == "passes sanity: yes"
    assert head.loc["guided_backprop", "verdict"] == "passes sanity: no"
    assert (table[table.metric != "spearman_abs_top"].verdict == "").all()
    assert set(table.flaw) == {"clean", "all"}
    assert "spearman_abs_data" not in cell.scores
    torch.manual_seed(5)
    perm = _Case(SmallCNN(1, 10, 16, width=16).eval(), x[:8], kind="label_permutation", name="perm")
    other = _Case(model, x[:8], kind="patch", name="p")
    tool = make_tool("gradcam")
    assert track.partners(case, [case, other], tool) == ()
    assert track.partners(case, [other, case, perm], tool) == (perm,)  # the run's cases, not the cache
    cell = track.run(case, tool, partners=(perm,))
    assert len(cell.items["spearman_abs_data"]) == 8 and cell.extras["data_randomization_case"] == "perm"


def test_runner_pairs_each_clean_case_with_its_suites_permuted_case(smoke_cases) -> None:
    """The data-randomisation partner comes from the run's own cases and is part of the cell key."""
    from eis.runner.cells import cell_key, expand
    from eis.runner.execute import run_cell

    def gradcam_cells(cases):  # (controls always run too)
        return [c for c in expand(cases, tools=["gradcam"], tracks=["sanity"]) if c.tool == "gradcam"]

    (cnn,) = gradcam_cells(smoke_cases)  # the suite's one clean case
    assert cnn.case.name == "digits-cnn-clean" and [p.name for p in cnn.partners] == ["digits-cnn-permuted"]
    (alone,) = gradcam_cells([c for c in smoke_cases if c.name != "digits-cnn-permuted"])
    assert alone.partners == ()  # nothing looked up in the cache
    plain = cell_key(cnn.case.id, cnn.tool, cnn.settings_json, cnn.track, cnn.track_version)
    assert alone.key == plain and cnn.key != plain  # another partner is another cell
    rec, _ = run_cell(cnn)
    assert rec["status"] == "ok", rec["error"]
    assert rec["extras"]["data_randomization_case"] == cnn.partners[0].id
    assert 0.0 <= rec["scores"]["spearman_abs_data"] <= 1.0
