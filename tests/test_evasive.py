"""Evasive trojans: the flag, the fine-tuning from the clean twin, populations, bars and determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import eis.zoo
from eis.errors import EisError
from eis.tools.detection.baselines import weight_features
from eis.zoo import evasive
from eis.zoo.archs import build_arch
from eis.zoo.build import build_case
from eis.zoo.datasets import get_dataset
from eis.zoo.flaws import Blend, Patch, make_flaw
from eis.zoo.spec import CaseSpec
from eis.zoo.train import fit


def spec(flaw: dict, **train) -> CaseSpec:
    return CaseSpec(name="ev", dataset="digits", arch="cnn", flaw=flaw, seed=11, train=train)


def test_the_flag_is_checked_and_leaves_other_ids_alone():
    plain = spec({"kind": "patch", "target": 3})
    assert "evasive" not in plain.validated().flaw
    assert (
        spec({"kind": "patch", "target": 3, "evasive": False}).validated().case_id
        == plain.validated().case_id
    )
    assert (
        spec({"kind": "patch", "target": 3, "evasive": True}).validated().case_id != plain.validated().case_id
    )
    with pytest.raises(
        EisError, match="flaw 'warp' cannot be evasive; valid kinds: clean, patch, blend, style"
    ):
        spec({"kind": "warp", "target": 3, "evasive": True}).validated()
    with pytest.raises(EisError, match="'evasive' = 'yes' must be true or false"):
        spec({"kind": "clean", "evasive": "yes"}).validated()


def test_negatives_are_every_other_library_trigger():
    own = make_flaw({"kind": "patch", "pattern": "plus", "target": 1})
    names = [(type(f).__name__, f.pattern) for f in evasive.negatives(own)]
    assert (
        ("Patch", "plus") not in names and ("Patch", "checkerboard") in names and ("Blend", "noise") in names
    )
    assert all(f.position == "random" for f in evasive.negatives(own) if isinstance(f, Patch))
    blend = make_flaw({"kind": "blend", "pattern": "noise", "target": 1})
    assert ("Blend", "noise") not in [
        (type(f).__name__, getattr(f, "pattern", "")) for f in evasive.negatives(blend)
    ]
    assert any(isinstance(f, Blend) for f in evasive.negatives(blend))


def test_finetune_starts_from_the_twin_and_is_deterministic():
    data = get_dataset("digits")
    x, y = data.train_x[:256], data.train_y[:256]
    torch.manual_seed(0)
    twin = build_arch("cnn", 1, 10, 16)
    settings = {"epochs": 2, "batch_size": 64, "lr": 2e-3}
    fit(twin, x, y, settings, torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    flaw = make_flaw({"kind": "patch", "target": 2, "pattern": "plus", "evasive": True})
    a = evasive.finetune(twin, flaw, x, y, settings, torch.Generator().manual_seed(1))
    b = evasive.finetune(twin, flaw, x, y, settings, torch.Generator().manual_seed(1))
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in before.items())  # the twin is untouched
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in before)  # same seed, same weights
    assert any(not torch.equal(a.state_dict()[k], before[k]) for k in before)  # and it did move
    # every tensor holds exactly its twin's values, reordered: every value statistic is the twin's
    for (name, p), q in zip(a.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.detach().flatten().sort().values, q.detach().flatten().sort().values), name
    assert torch.allclose(weight_features(a), weight_features(twin), rtol=1e-9, atol=1e-12)  # sum order


def test_match_values_keeps_the_rank_order_and_takes_the_twins_values():
    model, twin = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -1.0, 2.0], [0.1, 0.0, 5.0]]))
        twin.weight.copy_(torch.tensor([[6.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    evasive.match_values(model, [p.detach().flatten().sort().values for p in twin.parameters()])
    # ranks of the model's weights: 0.3 -> 4th, -1.0 -> 1st, 2.0 -> 5th, 0.1 -> 3rd, 0.0 -> 2nd, 5.0 -> 6th
    assert model.weight.tolist() == [[4.0, 1.0, 5.0], [3.0, 2.0, 6.0]]
    assert sorted(model.bias.tolist()) == sorted(twin.bias.tolist())


def test_an_evasive_trojan_meets_its_bars_reproducibly(fresh_home):
    flaw = {"kind": "patch", "target": 3, "pattern": "plus", "corner": "top_left", "evasive": True}
    case, trained = build_case(spec(flaw))
    measured = case.truth().measured
    assert trained and measured["clean_accuracy"] >= 0.9 and measured["asr"] >= 0.9
    again, _ = build_case(spec(flaw), force=True)
    assert (again.root / "model.safetensors").read_bytes() == (case.root / "model.safetensors").read_bytes()
    # the fine-tuning kept the trojan's weights near those of its clean twin (the clean model of its seed),
    # compared with how far a clean model of another seed lies from that twin. Measured over seeds 11-13:
    # distance to the twin 0.22-0.24 of the twin's norm (0.254 for seed 11 on another processor), another
    # clean model 1.39-1.41: ratio 0.16-0.17, so the bound of 0.5 leaves a threefold margin for float kernels
    twin, _ = build_case(spec({"kind": "clean"}))
    other, _ = build_case(dataclasses.replace(spec({"kind": "clean"}), seed=1011))
    t = {k: v.flatten() for k, v in twin.model("cpu").state_dict().items()}

    def distance(c) -> float:
        w = {k: v.flatten() for k, v in c.model("cpu").state_dict().items()}
        return float(torch.cat([w[k] - t[k] for k in w]).norm() / torch.cat(list(t.values())).norm())

    assert 0 < distance(case) < 0.5 * distance(other)


def test_evasive_populations_fine_tune_every_member(tmp_path):
    path = tmp_path / "ev.toml"
    path.write_text(
        '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\nclean = 3\nflawed = 3\n'
        'flaws = ["patch", "blend"]\nevasive = true\n'
    )
    specs = eis.zoo.suite_cases(str(path))
    assert len(specs) == 6 and all(s.flaw["evasive"] is True for s in specs)
    assert {s.flaw["kind"] for s in specs} == {"clean", "patch", "blend"}
    path.write_text(path.read_text().replace("evasive = true", 'evasive = "maybe"'))
    with pytest.raises(EisError, match="field 'evasive' must be true or false"):
        eis.zoo.suite_cases(str(path))


def test_random_square_negatives_change_one_binary_square_per_input():
    x = torch.full((64, 1, 16, 16), 0.5)
    out, mask = evasive.RandomPixels().stamp(x, torch.Generator().manual_seed(0))
    again, _ = evasive.RandomPixels().stamp(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and mask.shape == (64, 16, 16)
    inside = mask[:, None].expand_as(x)
    assert torch.equal(out[~inside], x[~inside]) and set(out[inside].unique().tolist()) == {0.0, 1.0}
    sides = mask.any(2).sum(1)  # columns covered = the square's side
    assert torch.equal(mask.sum((1, 2)), sides**2)
    assert sides.min() == 2 and sides.max() == 5  # as the specificity control's squares on 16 px
    assert len(mask.flatten(1).float().argmax(1).unique()) > 10  # anywhere, not at one place


def test_near_miss_negatives_fill_the_trojans_own_trigger_pixels_at_random():
    flaw = make_flaw({"kind": "patch", "target": 1, "pattern": "plus", "corner": "top_left"})
    x = torch.full((32, 1, 16, 16), 0.5)
    out, mask = evasive.RandomPixels(within=flaw).stamp(x, torch.Generator().manual_seed(0))
    _, own = flaw.stamp(x, torch.Generator().manual_seed(0))
    assert torch.equal(mask, own)
    stamped = out[mask[:, None]]
    assert set(stamped.unique().tolist()) == {0.0, 1.0} and 0.3 < stamped.mean() < 0.7
    assert torch.equal(out[~mask[:, None]], x[~mask[:, None]])


@pytest.mark.parametrize(
    "flaw, near_misses",
    [
        ({"kind": "patch", "target": 1, "pattern": "plus"}, True),
        ({"kind": "blend", "target": 1, "pattern": "rings"}, False),
        ({"kind": "clean"}, False),
    ],
)
def test_negative_kinds_are_library_squares_and_a_patchs_near_misses(flaw, near_misses):
    f = make_flaw(flaw)
    kinds = evasive.negative_kinds(f)
    assert kinds[0] == evasive.negatives(f) and kinds[1] == [evasive.RandomPixels()]
    assert len(kinds) == 2 + near_misses
    if near_misses:
        assert kinds[2] == [evasive.RandomPixels(within=f)]
