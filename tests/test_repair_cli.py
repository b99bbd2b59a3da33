"""``eis repair`` on a model trained outside the zoo: its weights load back into the user's own factory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from eis.cli import app
from eis.usermodel import load_factory, save_weights

FACTORY = """
import torch.nn as nn


def tiny(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes),
    )
"""


def _stamp(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, -2:, -2:] = 1.0  # a 2x2 white corner
    return x


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A tiny conv net trained here on scikit-learn's 8x8 digits with a corner-patch trojan to class 0."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("user")
    (root / "nets.py").write_text(FACTORY)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen)
    tr, te = perm[:1300], perm[1300:]
    xt, yt = x[tr].clone(), y[tr].clone()
    poison = torch.nonzero(yt != 0).flatten()[:130]
    xt[poison], yt[poison] = _stamp(xt[poison]), 0
    torch.manual_seed(0)
    model = load_factory(f"{root / 'nets.py'}:tiny")()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        for _step in range(0, len(xt), 64):
            idx = torch.randperm(len(xt), generator=gen)[:64]
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        asr = (model(_stamp(x[te][y[te] != 0])).argmax(1) == 0).float().mean().item()
        acc = (model(x[te]).argmax(1) == y[te]).float().mean().item()
    assert acc > 0.85 and asr > 0.8, (acc, asr)
    save_weights(model, root / "model.safetensors")
    np.savez(root / "clean.npz", x=x[te].numpy(), y=y[te].numpy())
    np.savez(root / "few.npz", x=x[te][:20].numpy(), y=y[te][:20].numpy())
    return root


def test_repair_cli_writes_weights_that_load_into_the_factory(user_model) -> None:
    root, out = user_model, user_model / "out"
    args = ["repair", str(root / "model.safetensors"), "--arch", f"{root / 'nets.py'}:tiny"]
    res = CliRunner().invoke(
        app, [*args, "--data", str(root / "clean.npz"), "--out", str(out), "--nc-steps", "60"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "repair.json").read_text())
    assert report["n_validation"] == 99 and report["n_budget"] == 398
    assert report["detection"]["target"] == 0 and report["detection"]["flagged"]
    assert report["method"] == "nc_unlearning"  # "auto" with a flagged trigger
    assert report["acc_after"] > report["acc_before"] - 0.05
    assert report["trigger_asr_before"] > 0.8 and report["trigger_asr_after"] < 0.2
    assert "clean accuracy (held out)" in res.output and (out / "repair.html").read_text().startswith(
        "<!doctype"
    )
    fresh = load_factory(f"{root / 'nets.py'}:tiny")()
    fresh.load_state_dict(load_file(str(out / "repaired.safetensors")))  # strict: same keys and shapes
    before = load_file(str(root / "model.safetensors"))
    assert any(not torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_repair_cli_bad_input(user_model) -> None:
    root = user_model
    base = ["repair", str(root / "model.safetensors"), "--arch", f"{root / 'nets.py'}:tiny"]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--data", str(root / "few.npz"), "--out", str(root / "o1")])
    assert res.exit_code == 2 and "too few to hold out a validation split" in res.output
    res = runner.invoke(app, [*base, "--data", str(root / "clean.npz"), "--method", "nope"])
    assert res.exit_code == 2 and "unknown repair method 'nope'" in res.output
    res = runner.invoke(app, [*base, "--data", str(root / "clean.npz"), "--settings", "[1]"])
    assert res.exit_code == 2 and "--settings must be a JSON object" in res.output


def test_repair_api_with_a_named_method(user_model) -> None:
    """The Python API: a method without a detector still gets the recovered trigger's ASR reported."""
    import eis.repair
    from eis.usermodel import load_examples, load_model

    root = user_model
    model = load_model(root / "model.safetensors", f"{root / 'nets.py'}:tiny", device="cpu")
    x, y, _ = load_examples(root / "clean.npz")
    repaired, report = eis.repair.repair(
        model, x, y, method="finetune", settings={"epochs": 2}, detector_steps=30
    )
    assert report.method == "finetune" and report.details["steps"] > 0
    assert report.trigger_asr_before is not None and type(repaired) is type(model)
    saved = load_file(str(root / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())  # the input is untouched
