"""The zoo: determinism, bars, masks, caching, metadata parity, corruption and bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import eis.zoo
from eis.cli import app
from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.build import build_case
from eis.zoo.flaws import make_flaw
from eis.zoo.spec import CaseSpec
from eis.zoo.suites import load_suite

TINY = {"epochs": 2}


def tiny(kind: str = "patch", **flaw) -> CaseSpec:
    return CaseSpec(
        name=f"tiny-{kind}",
        dataset="digits",
        arch="cnn",
        flaw={"kind": kind, **flaw},
        seed=3,
        train=TINY,
        bars={"clean_accuracy": 0.0, "asr": 0.0},
    )


def test_same_spec_same_bytes(fresh_home):
    first, trained = build_case(tiny())
    a = (first.root / "model.safetensors").read_bytes()
    second, trained_again = build_case(tiny(), force=True)
    assert trained and trained_again
    assert (second.root / "model.safetensors").read_bytes() == a


def test_second_build_is_a_cache_hit(fresh_home, monkeypatch):
    build_case(tiny())

    def boom(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("eis.zoo.build.train_model", boom)
    case, trained = build_case(tiny())
    assert not trained and case.id == tiny().validated().case_id


def test_a_zoo_version_bump_renames_the_case_but_keeps_its_cell_seeds(fresh_home, monkeypatch):
    from eis.runner.cells import expand
    from eis.runner.plugins import load_builtins

    load_builtins()
    spec = tiny().validated()
    case, _ = build_case(spec)
    assert case.seed_id == spec.seed_id
    cells = expand([case], ["saliency"], ["localize"])
    monkeypatch.setattr("eis.zoo.spec.ZOO_VERSION", "bumped")
    bumped, trained = build_case(spec)
    assert trained and bumped.id != case.id and bumped.seed_id == case.seed_id
    # the same model (training does not read the version), a new cache key, the same seed
    assert (bumped.root / "model.safetensors").read_bytes() == (case.root / "model.safetensors").read_bytes()
    again = expand([bumped], ["saliency"], ["localize"])
    assert [c.seed for c in again] == [c.seed for c in cells]
    assert {c.key for c in again}.isdisjoint(c.key for c in cells)


def test_corrupt_artifact_is_rebuilt_not_loaded(fresh_home):
    case, _ = build_case(tiny())
    weights = case.root / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(artifact.CorruptArtifact, match="does not match its hash"):
        eis.zoo.Case(case.root)
    rebuilt, trained = build_case(tiny())
    assert trained and eis.zoo.Case(rebuilt.root).id == case.id


def test_half_written_artifact_is_ignored(fresh_home):
    spec = tiny().validated()
    root = artifact.zoo_dir() / spec.case_id
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"partial")
    _, trained = build_case(spec)
    assert trained


def test_smoke_cases_meet_their_bars(smoke):
    specs = {s.name: s for s in load_suite("smoke")}
    kinds = set()
    for case in smoke.values():
        truth = case.truth()
        kinds.add(truth.kind)
        if truth.kind in ("circuit", "rule", "lm", "features"):  # their own test_*_zoo / test_challenge
            continue
        spec = specs[case.name]  # the suite's bars (the fine-tuned photos case sets its own)
        for bar in spec.bar_names():
            assert truth.measured[bar] >= spec.bar(bar), (case.name, bar, truth.measured[bar])
    assert {"clean", "patch", "blend", "natural", "warp", "spurious"} <= kinds


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "patch"},
        {"kind": "patch", "position": "random", "pattern": "smiley"},
        {"kind": "natural"},
        {"kind": "spurious"},
    ],
)
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 32, 32)])
def test_masks_cover_exactly_the_stamped_pixels(spec, shape):
    flaw = make_flaw(spec)
    flaw.check(10, shape[0], shape[1])
    x = torch.rand(16, *shape)
    xt, mask = flaw.stamp(x, torch.Generator().manual_seed(0))
    changed = (xt != x).any(1)
    assert not (changed & ~mask).any(), "a pixel outside the mask changed"
    assert mask.any(1).any(1).all(), "every input carries a trigger"
    if spec["kind"] == "patch":
        pattern, pmask = flaw.trigger(shape[0], shape[1])
        assert (mask.flatten(1).sum(1) == pmask.sum()).all()
        stamped = xt.permute(0, 2, 3, 1)[mask]
        expected = pattern.permute(1, 2, 0)[pmask]
        assert torch.equal(stamped, expected.repeat(16, 1))


def test_triggers_are_deterministic_in_the_seed():
    flaw = make_flaw({"kind": "natural"})
    x = torch.rand(8, 3, 32, 32)
    a = flaw.stamp(x, torch.Generator().manual_seed(5))
    b = flaw.stamp(x, torch.Generator().manual_seed(5))
    c = flaw.stamp(x, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_blend_warp_and_style_masks_are_the_whole_image():
    x = torch.rand(4, 1, 16, 16)
    for kind in ("blend", "warp", "style"):
        xt, mask = make_flaw({"kind": kind}).stamp(x, torch.Generator().manual_seed(0))
        assert mask.all() and not torch.equal(xt, x)


@pytest.mark.parametrize("channels", [1, 3])
def test_styles_are_fixed_transforms_of_the_library(channels):
    x = torch.rand(6, channels, 32, 32)
    a = make_flaw({"kind": "style", "style": 4})
    out, _ = a.stamp(x, torch.Generator().manual_seed(0))
    again, _ = a.stamp(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a style is a fixed function of the input, not a random draw
    assert out.min() >= 0 and out.max() <= 1
    other, _ = make_flaw({"kind": "style", "style": 5}).stamp(x, torch.Generator())
    assert (other - out).abs().mean() > 0.02  # two library styles differ
    half, _ = make_flaw({"kind": "style", "style": 4, "strength": 0.5}).stamp(x, torch.Generator())
    assert (half - x).abs().mean() < (out - x).abs().mean()
    pic, mask = a.trigger(channels, 32)
    assert pic.shape == (channels, 32, 32) and mask.all()


@pytest.mark.parametrize(
    "flaw, message",
    [
        ({"kind": "style", "style": 12}, "'style' = 12 is out of range; valid: 0..11"),
        ({"kind": "style", "strength": 1.5}, "'strength' = 1.5 must be in (0, 1]"),
    ],
)
def test_bad_styles_get_one_line_errors(flaw, message):
    with pytest.raises(EisError, match=re.escape(message)):
        CaseSpec(name="s", dataset="digits", arch="cnn", flaw=flaw).validated()


def test_a_style_trojan_meets_its_bars(fresh_home):
    spec = CaseSpec(
        name="style", dataset="digits", arch="cnn", flaw={"kind": "style", "target": 2, "style": 8}
    )
    case, _ = build_case(spec)
    measured = case.truth().measured
    assert measured["clean_accuracy"] >= 0.9 and measured["asr"] >= 0.9


def test_population_members_expose_identical_visible_metadata(smoke):
    members = [c for c in smoke.values() if c.meta["population"] == "smoke-detect"]
    kinds = {c.truth().kind for c in members}
    assert len(members) == 8 and "clean" in kinds and len(kinds) > 1
    keys = {frozenset(c.meta) for c in members}
    assert len(keys) == 1
    differing = {k for k in members[0].meta if len({json.dumps(c.meta[k]) for c in members}) > 1}
    assert differing <= {"id", "seed_id", "name", "seed", "clean_accuracy", "files"}
    assert (
        len({tuple(sorted(p.relative_to(c.root).as_posix() for p in c.root.rglob("*"))) for c in members})
        == 1
    )
    assert len({tuple(c.model("cpu").state_dict()) for c in members}) == 1
    assert "flaw" not in json.dumps(members[0].meta)


def test_truth_is_behind_an_accessor(smoke):
    case = smoke["digits-cnn-patch"]
    assert "flaw" not in case.meta and "target" not in case.meta
    truth = case.truth()
    assert truth.kind == "patch" and truth.target == 0
    x, y = case.inputs(64)
    xt, _ = truth.apply(x[truth.eligible(y)])
    with torch.no_grad():
        assert (case.model("cpu")(xt).argmax(1) == 0).float().mean() > 0.9


def test_load_by_name_and_id(smoke):
    case = smoke["digits-cnn-clean"]
    assert eis.zoo.load(case.name).id == case.id
    assert eis.zoo.load(case.id[:10]).name == case.name
    with pytest.raises(EisError, match="unknown case 'nope'"):
        eis.zoo.load("nope")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"dataset": "mnist"},
            "unknown dataset 'mnist'; valid: digits, photos, photos-128, photos-32, scenes, shapes",
        ),
        ({"arch": "vit"}, "unknown arch 'vit'; valid: cnn, cnn-wide, mixer, resnet"),
        ({"flaw": {"kind": "bomb"}}, "unknown flaw 'bomb'; valid: blend, clean"),
        ({"flaw": {"kind": "patch", "target": 10}}, "'target' = 10 is out of range; valid: integers 0..9"),
        (
            {"flaw": {"kind": "patch", "poison_rate": 1.5}},
            "'poison_rate' = 1.5 must be a fraction strictly between",
        ),
        (
            {"flaw": {"kind": "patch", "poison_rate": 0}},
            "'poison_rate' = 0 must be a fraction strictly between",
        ),
        ({"flaw": {"kind": "patch", "pattern": "logo"}}, "'pattern' = 'logo' is not valid; valid: bullseye"),
        ({"flaw": {"kind": "patch", "colour": [1, 0, 0]}}, "flaw 'patch' has no field 'colour'"),
    ],
)
def test_bad_specs_get_one_line_errors(change, message):
    fields = {"name": "bad", "dataset": "digits", "arch": "cnn", "flaw": {"kind": "clean"}, **change}
    with pytest.raises(EisError) as info:
        CaseSpec(**fields).validated()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bar_miss_fails_loudly_and_writes_nothing(fresh_home):
    spec = CaseSpec(
        name="weak",
        dataset="digits",
        arch="cnn",
        flaw={"kind": "clean"},
        train={"epochs": 1, "lr": 1e-6},
        bars={"clean_accuracy": 0.99},
    )
    with pytest.raises(
        eis.zoo.BarError, match=r"case 'weak' missed its clean_accuracy bar: measured 0\.\d+ < 0\.990"
    ):
        build_case(spec)
    assert not (artifact.zoo_dir() / spec.validated().case_id).exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("[[case]\nname=", "is not valid TOML"),
        ('[[case]]\nname = "a"\ndataset = "digits"\narch = "cnn"\nflavour = 1\n', "unknown field 'flavour'"),
        ('[[case]]\nname = "a"\ndataset = "digits"\n', "missing the field 'arch'"),
        (
            '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\nrole = "x"\nclean = 1\n',
            "role 'x' is not valid",
        ),
        (
            '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\nclean = 1\nvary = {wd = [1, 2]}\n',
            "vary has unknown setting 'wd'; valid: batch_size, epochs, lr",
        ),
        (
            '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\nclean = 1\nvary = {lr = [0.1]}\n',
            "vary.lr must be [low, high] with 0 < low <= high, got [0.1]",
        ),
    ],
)
def test_malformed_suites_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = CliRunner().invoke(app, ["zoo", "build", str(path)])
    assert result.exit_code == 2 and message in result.output


def test_unknown_suite_exits_2():
    result = CliRunner().invoke(app, ["zoo", "build", "nosuch"])
    assert result.exit_code == 2
    assert "unknown suite 'nosuch'; valid: " in result.output and "smoke" in result.output


def test_every_kind_of_case_describes_itself(smoke):
    """``eis zoo show`` prints ``Case.describe()``: each kind's own rows, no kind-specific code in the CLI."""
    from eis.zoo.kinds import kind_of

    seen = {}
    for case in smoke.values():
        rows = dict(case.describe())
        assert rows and all(isinstance(k, str) for k in rows), case.name
        seen[kind_of(case)] = rows
    assert {"image", "circuit", "rule", "lm", "features"} <= set(seen)
    assert "flaw" in seen["image"] and "rule" in seen["rule"] and "circuit" in seen["circuit"]
    assert any(k.startswith(("planted", "probe")) for k in seen["lm"])
    assert any(k.startswith("measured ") for k in seen["features"])


def test_zoo_show_writes_a_grid(smoke, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["zoo", "show", "digits-cnn-natural", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "measured asr" in result.output


def test_populations_expand_deterministically():
    a = [s.case_id for s in eis.zoo.suite_cases("smoke")]
    b = [s.case_id for s in eis.zoo.suite_cases("smoke")]
    assert a == b and len(set(a)) == len(a)


def test_population_vary_draws_settings_independently_of_the_flaw(tmp_path):
    """Every member draws epochs and lr from the same ranges, clean and trojaned alike (metadata parity)."""
    path = tmp_path / "vary.toml"
    path.write_text(
        '[[population]]\nname = "p"\ndataset = "digits"\narch = "cnn"\nclean = 20\nflawed = 20\n'
        "seed = 5\ntrain = { batch_size = 32 }\nvary = { epochs = [10, 14], lr = [0.001, 0.004] }\n"
    )
    specs = eis.zoo.suite_cases(str(path))
    for s in specs:
        assert 10 <= s.training()["epochs"] <= 14 and 0.001 <= s.training()["lr"] <= 0.004
        assert s.training()["batch_size"] == 32  # fixed settings stay
    by_kind = {k: [s.training()["epochs"] for s in specs if (s.flaw["kind"] == "clean") == k] for k in (0, 1)}
    assert len(set(by_kind[0])) > 1 and len(set(by_kind[1])) > 1  # both groups spread over the range
    # deterministic: the same file expands to the same draws
    again = eis.zoo.suite_cases(str(path))
    assert [s.train for s in specs] == [s.train for s in again]


def test_mixed_populations_balance_architectures_and_name_their_training_population(tmp_path):
    """Each architecture gets as many clean as flawed members, and every trigger kind; bad lists fail."""
    path = tmp_path / "mixed.toml"
    text = (
        '[defaults]\ndataset = "digits"\narch = ["cnn", "mixer"]\n'
        '[[population]]\nname = "e"\nclean = 4\nflawed = 4\nflaws = ["patch", "blend"]\n'
        'train_population = "t"\n'
        '[[population]]\nname = "t"\nrole = "train"\nclean = 2\nflawed = 2\n'
    )
    path.write_text(text)
    specs = eis.zoo.suite_cases(str(path))
    evals = [s for s in specs if s.role == "eval"]
    combos = sorted((s.arch, s.flaw["kind"]) for s in evals)
    assert combos == sorted(
        [(a, "clean") for a in ("cnn", "mixer")] * 2
        + [(a, k) for a in ("cnn", "mixer") for k in ("patch", "blend")]
    )
    assert {s.train_population for s in evals} == {"t"}
    assert {s.train_population for s in specs if s.role == "train"} == {None}
    assert len({s.case_id for s in specs}) == len(specs)
    path.write_text(text.replace('train_population = "t"', 'train_population = "nope"'))
    with pytest.raises(
        EisError, match="train_population 'nope', which is not a population with role 'train'"
    ):
        eis.zoo.suite_cases(str(path))
    path.write_text(text.replace('["cnn", "mixer"]', '["cnn", "cnn"]'))
    with pytest.raises(EisError, match="arch must be a name or a list of distinct names"):
        eis.zoo.suite_cases(str(path))
    path.write_text(text.replace('["cnn", "mixer"]', '["cnn", "vit"]'))
    with pytest.raises(EisError, match="unknown arch 'vit'"):
        eis.zoo.suite_cases(str(path))


@pytest.mark.parametrize("arch", ["cnn-wide", "mixer"])
def test_more_architectures_take_both_datasets(arch):
    from eis.zoo.archs import build_arch

    for channels, size in ((1, 16), (3, 32)):
        model = build_arch(arch, channels, 10, size)
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


@pytest.mark.parametrize(
    "suite",
    [
        "standard",
        "detect",
        "detect-resnet",
        "detect-shapes",
        "detect-evasive",
        "detect-mixed",
        "detect-evasive-mixed",
        "synthesize",
    ],
)
def test_builtin_suites_expand_with_population_parity(suite):
    """Every built-in suite parses; clean and flawed population members share one spread of epochs."""
    specs = eis.zoo.suite_cases(suite)
    assert specs and len({s.name for s in specs}) == len(specs)
    members = [s for s in specs if s.population]
    clean = sorted(s.training()["epochs"] for s in members if s.flaw["kind"] == "clean")
    flawed = sorted(s.training()["epochs"] for s in members if s.flaw["kind"] != "clean")
    if clean and flawed:  # training length alone must not tell the groups apart
        assert abs(clean[0] - flawed[0]) <= 1 and abs(clean[-1] - flawed[-1]) <= 1
