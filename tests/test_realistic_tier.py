"""The realistic tier's zoo: photograph data, field-sized architectures, trojans implanted by fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
import torch

from eis.errors import EisError
from eis.zoo import implant
from eis.zoo.archs import ResNet18, build_arch
from eis.zoo.datasets import DATASETS, dataset_info
from eis.zoo.photos import BACKGROUND_PHOTOS, TEXTURE_PHOTOS, render_photos
from eis.zoo.spec import CaseSpec
from eis.zoo.suites import load_suite

SMOKE_CASE = "photos-resnet-finetune-patch"


def test_photos_are_deterministic_and_use_only_bundled_images(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the photos data set tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    a, ya = render_photos(40, 32, seed=3)
    b, yb = render_photos(40, 32, seed=3)
    c, _ = render_photos(40, 32, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    assert a.shape == (40, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert set(ya.tolist()) <= set(range(10)) and len(set(ya.tolist())) > 5
    # real photographs: far more distinct colours per image than a procedural fill would give
    assert all(len(torch.unique(img.flatten())) > 500 for img in a[:5])
    assert len(BACKGROUND_PHOTOS) >= 10 and set(TEXTURE_PHOTOS) == {"brick", "grass", "gravel"}


def test_photos_sizes_and_tiers():
    assert dataset_info("photos").input_shape == (3, 64, 64)
    assert dataset_info("photos-128").input_shape == (3, 128, 128)
    assert dataset_info("photos").num_classes == 10
    assert DATASETS.tier("photos") == "realistic" and DATASETS.tier("digits") == "toy"
    assert DATASETS.tier("not-a-dataset") == "toy"
    with pytest.raises(EisError, match="unknown tier 'huge'; valid: toy, realistic"):
        DATASETS.register("huge-data", lambda: None, tier="huge")
    assert "huge-data" not in DATASETS


def test_resnet18_is_the_standard_topology():
    """Width 64 has torchvision's ResNet-18 body exactly: 11,689,512 parameters with a 1000-class head."""
    model = build_arch("resnet18", 3, 1000, 224)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1000)
    narrow = build_arch("resnet18-w16", 3, 10, 64)
    assert narrow.layer4[0].conv1.out_channels == 128 and len(narrow.layer3) == 2


def test_resnet18_runs_channels_last_with_the_same_values():
    """The realistic tier's ResNet-18 holds weights and activations channels-last (faster convolutions);
    its logits and input gradients equal the default layout's to float rounding, and an input gradient
    comes back in the ordinary layout."""
    torch.manual_seed(0)
    fast = build_arch("resnet18-w16", 3, 10, 32).eval()
    plain = ResNet18(3, 10, 32, width=16, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    assert fast.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.stem[0].weight.is_contiguous()
    grads, x0 = [], torch.rand(4, 3, 32, 32)
    for model in (fast, plain):
        x = x0.clone().requires_grad_(True)
        out = model(x)
        (g,) = torch.autograd.grad(out[:, 3].sum(), x)
        grads.append((out.detach(), g))
    (out_f, g_f), (out_p, g_p) = grads
    assert torch.allclose(out_f, out_p, atol=1e-5) and torch.allclose(g_f, g_p, atol=1e-6)
    assert g_f.is_contiguous() and g_f.view(4, -1).shape == (4, 3 * 32 * 32)


def _ft_spec(flaw: dict, **train) -> CaseSpec:
    return CaseSpec("ft", "photos-32", "resnet", flaw, seed=5, train={"epochs": 6, "finetune": train})


def test_finetuned_specs_share_one_base():
    a = _ft_spec({"kind": "patch", "target": 1}, epochs=2, lr=1e-3).validated()
    b = _ft_spec({"kind": "clean"}, epochs=1).validated()
    base_a, base_b = implant.base_spec(a), implant.base_spec(b)
    assert base_a.case_id == base_b.case_id
    assert base_a.flaw["kind"] == "clean" and "finetune" not in base_a.train and base_a.seed == 0
    assert implant.bases([a, b, base_a]) == [base_a]
    assert implant.base_spec(CaseSpec("s", "photos-32", "resnet", {"kind": "clean"})) is None
    assert a.bar_names() == ("clean_accuracy", "asr", "clean_vs_base")
    settings = implant.finetune_settings(b.training())
    assert settings["epochs"] == 1 and settings["lr"] == pytest.approx(0.1 * b.training()["lr"])
    augmented = CaseSpec(
        "a", "photos-32", "resnet", {"kind": "clean"}, train={"augment": ["flip"], "finetune": {}}
    )
    assert implant.finetune_settings(augmented.training())["augment"] == ["flip"]  # the base's, by default
    plain = dataclasses.replace(augmented, train={"augment": ["flip"], "finetune": {"augment": []}})
    assert implant.finetune_settings(plain.training())["augment"] == []
    assert implant.base_spec(plain.validated()).case_id == implant.base_spec(augmented.validated()).case_id


@pytest.mark.parametrize(
    ("finetune", "message"),
    [
        ({"epochs": 0}, "finetune epochs must be an integer >= 1; got 0"),
        ({"lr": -1}, "finetune lr must be a number > 0; got -1"),
        ({"steps": 3}, "finetune has no key 'steps'; valid: epochs, lr, base_seed, augment"),
        ({"augment": ["rotate"]}, "finetune augment must be a list drawn from flip, crop; got"),
    ],
)
def test_bad_finetune_tables_are_one_line_errors(finetune, message):
    with pytest.raises(EisError, match=message):
        _ft_spec({"kind": "clean"}, **finetune).validated()


def test_evasive_and_finetune_do_not_combine():
    spec = _ft_spec({"kind": "patch", "target": 1, "evasive": True})
    with pytest.raises(EisError, match="evasive flaw cannot also be implanted by finetune"):
        spec.validated()


def test_smoke_finetune_case_meets_its_bars(smoke):
    """The smoke zoo's fine-tune-implanted trojan: attack success >= 0.9 and at most 5 points of clean
    accuracy lost against its base, which is a cached clean case of its own."""
    case = smoke[SMOKE_CASE]
    truth = json.loads((case.root / "truth" / "truth.json").read_text())
    measured, bars = truth["measured"], truth["bars"]
    assert bars == {"clean_accuracy": 0.5, "asr": 0.9, "clean_vs_base": -0.05}
    assert measured["asr"] >= 0.9
    assert measured["clean_accuracy"] - measured["base_clean_accuracy"] >= -0.05
    spec = next(s for s in load_suite("smoke") if s.name == SMOKE_CASE)
    from eis.zoo.build import cached

    base = cached(implant.base_spec(spec))
    assert base is not None and base.truth().kind == "clean"
    assert base.meta["clean_accuracy"] == pytest.approx(measured["base_clean_accuracy"], abs=1e-4)
    # the trojan is the base plus a little fine-tuning: most weights moved, none far
    w_case, w_base = case.model("cpu").state_dict(), base.model("cpu").state_dict()
    drift = torch.cat(
        [(w_case[k] - w_base[k]).flatten().float() for k in w_base if w_base[k].is_floating_point()]
    )
    scale = torch.cat([w_base[k].flatten().float() for k in w_base if w_base[k].is_floating_point()])
    assert 0 < drift.norm() < scale.norm()


def test_track_records_say_which_tier_they_come_from():
    from eis.audit.calibration import build_calibration, load_calibration, table_tiers, track_record_text

    entry = {
        "threshold": 2.0,
        "tpr": 0.9,
        "fpr": 0.1,
        "n": 20,
        "n_trojaned": 10,
        "n_clean": 10,
        "auroc": 0.95,
    }
    toy = track_record_text("neural_cleanse", entry, "anomaly index", "zoo", ["toy"])
    real = track_record_text("neural_cleanse", entry, "anomaly index", "zoo", ["realistic"])
    both = track_record_text("neural_cleanse", entry, "anomaly index", "zoo", ["realistic", "toy"])
    assert "(toy tier: small models trained from scratch in seconds)" in toy
    assert "(realistic tier: 64 px photographs" in real and "(realistic and toy tiers)" in both
    assert "tier" not in track_record_text("neural_cleanse", entry, "anomaly index", "shadows")
    assert table_tiers(load_calibration()) == ["toy"]  # the shipped table: built from toy suites only
    records = [
        {"track": "detect", "status": "ok", "dataset": d, "tool": "random_scorer", "control": True,
         "case_id": f"c{i}", "flaw": "clean" if i % 2 else "patch", "scores": {"score": float(i)},
         "extras": {}}
        for i, d in enumerate(["digits", "photos", "digits", "photos"])
    ]  # fmt: skip
    assert build_calibration(records, suites=["x"])["made_by"]["tiers"] == ["realistic", "toy"]
