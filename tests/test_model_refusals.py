"""A broken model is refused, never called clean: NaN outputs, input ignored, accuracy at chance, no score.

The models are hand-made (no training): a linear read-out that classifies perfectly whether an image's
brightness is above its middle, and broken copies of it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import eis.audit
from eis.audit import AuditReport, DetectorResult
from eis.cli import app
from eis.health import ModelRefused, check_model
from eis.tools.base import TOOLS, register_tool
from eis.tools.detection.base import Detection, DetectionTool
from eis.usermodel import save_weights

SIDE = 8


def bright(seed: int = 0, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is 1 when their mean is above 0.5, balanced."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 1, SIDE, SIDE, generator=g) * 0.4 + 0.1 + 0.4 * y[:, None, None, None]).clamp(0, 1)
    return x, y


def make() -> nn.Module:
    """The factory the CLI imports: flatten, one linear layer with logits (0, sum(x) - 8)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1] = 1.0
        net[1].bias.copy_(torch.tensor([0.0, -SIDE * SIDE / 2]))
    return net.eval()


def broken(kind: str) -> nn.Module:
    net = make()
    with torch.no_grad():
        if kind == "nan":
            for p in net.parameters():
                p.fill_(float("nan"))
        elif kind == "constant":
            net[1].weight.zero_()
        elif kind == "chance":
            net[1].weight.copy_(
                torch.randn(2, SIDE * SIDE, generator=torch.Generator().manual_seed(3)) * 1e-3
            )
            net[1].bias.copy_(torch.tensor([0.0, 0.0]))
            net[1].weight[1] = -net[1].weight[1]  # some dependence on the input, none on the label
    return net


def test_a_working_model_passes_and_its_accuracy_is_measured():
    x, y = bright()
    h = check_model(make(), x, y)
    assert h.accuracy == 1.0 and h.chance == 0.5 and h.p_value < 1e-9 and h.n == 64


@pytest.mark.parametrize(
    ("kind", "message"),
    [("nan", "NaN or infinite on 64 of 64"), ("constant", "same output"), ("chance", "not above chance")],
)
def test_broken_models_are_refused_with_the_reason(kind, message):
    x, y = bright()
    with pytest.raises(ModelRefused, match=message):
        check_model(broken(kind), x, y)
    with pytest.raises(ModelRefused, match=message):
        eis.audit.audit(broken(kind), x, y, detectors=["specificity"], synthesis=None, progress=False)


def test_shuffled_labels_are_refused_as_chance():
    x, y = bright()
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    with pytest.raises(ModelRefused, match="not above chance"):
        check_model(make(), x, y)


@pytest.fixture()
def files(tmp_path):
    x, y = bright()
    np.savez(tmp_path / "clean.npz", x=x.numpy(), y=y.numpy())
    for kind in ("nan", "constant", "chance"):
        save_weights(broken(kind), tmp_path / f"{kind}.safetensors")
    (tmp_path / "arch.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        f"    return nn.Sequential(nn.Flatten(), nn.Linear({SIDE**2}, 2))\n"
    )
    return tmp_path


@pytest.mark.parametrize("command", ["audit", "repair"])
@pytest.mark.parametrize("kind", ["nan", "constant", "chance"])
def test_cli_refuses_broken_models_with_exit_2_and_writes_nothing(files, command, kind):
    out = files / f"out-{command}-{kind}"
    args = [command, str(files / f"{kind}.safetensors"), "--arch", f"{files / 'arch.py'}:make"]
    args += ["--data", str(files / "clean.npz"), "--out", str(out)]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    assert "cannot be" in res.output and res.output.strip().count("\n") == 0, res.output
    assert not out.exists() or not any(out.iterdir())


class _NanScore(DetectionTool):
    """A detector whose optimisation diverged: its model-level score is NaN."""

    name = "test_nan_score"

    def inspect(self, model, clean_x, clean_y, num_classes):
        return Detection(score=float("nan"), target=0)


@pytest.fixture()
def nan_tool():
    """The NaN detector, registered for one test only (audits elsewhere run every registered detector)."""
    register_tool(_NanScore)
    yield _NanScore.name
    TOOLS.unregister(_NanScore.name)


def test_a_detector_without_a_finite_score_failed_not_input_level(nan_tool):
    x, y = bright()
    table = eis.audit.load_calibration()
    rep = eis.audit.audit(
        make(), x, y, detectors=["specificity", nan_tool], calibration=table, synthesis=None, progress=False
    )
    d = rep.detector(nan_tool)
    assert d.status == "failed" and "not finite" in d.reason and d.score is None
    assert "input-level" not in d.line() and "failed" in d.line()
    js = json.loads(json.dumps(rep.to_json()))
    assert js["model"]["clean_accuracy"] == 1.0
    assert next(e for e in js["detectors"] if e["name"] == nan_tool)["input_level"] is False


def test_no_verdict_when_no_model_level_detector_scored(nan_tool):
    x, y = bright()
    with pytest.raises(ModelRefused, match="no model-level detector produced a score"):
        eis.audit.audit(make(), x, y, detectors=[nan_tool], synthesis=None, progress=False)


def test_the_input_level_label_is_kept_for_input_level_tools():
    d = DetectorResult(name="strip", status="ok", input_level=True)
    assert "input-level" in d.line()
    assert "input-level" not in DetectorResult(name="x", status="ok").line()
    assert AuditReport.__dataclass_fields__["clean_accuracy"].default is None
