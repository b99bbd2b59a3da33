"""Feature cases: specs and suite tables, deterministic generation, the toy model, sealed truth."""

from __future__ import annotations

import pytest
import torch

from eis.errors import EisError
from eis.zoo.build import build_case, open_case
from eis.zoo.features.case import FeatureCase
from eis.zoo.features.generate import firing_probabilities, generate, sample_features, stream
from eis.zoo.features.spec import FeatureSpec, features_spec
from eis.zoo.suites import load_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_smoke_suite_holds_feature_cases() -> None:
    specs = {s.name: s for s in load_suite("smoke")}
    assert isinstance(specs["features-synthetic"], FeatureSpec)
    assert specs["features-toy-hierarchical"].source == "toy"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "colour": 1}, "unknown field 'colour'; valid:"),
        ({"source": "toy"}, "missing the field 'name'"),
        ({"name": "x", "source": "sound"}, "unknown source 'sound'; valid: synthetic, toy, lm"),
        ({"name": "x", "source": "lm"}, "with source 'lm' needs model = the name of an [[lm]] case"),
        (
            {"name": "x", "source": "lm", "model": "m", "d": 8},
            "lm-source features case 'x' has unknown field 'd'",
        ),
        ({"name": "x", "n_features": 8, "d": 8}, "d (8) must be below n_features (8)"),
        ({"name": "x", "p_active": 0}, "p_active must be a number in (0.0, 1.0]"),
        ({"name": "x", "correlation": 1.0}, "correlation must be below 1"),
        ({"name": "x", "parents": 8, "children": 4}, "need 40 features, more than n_features (32)"),
        ({"name": "x", "seed": -1}, "seed must be an integer in [0, 2147483648]"),
        ({"name": "x", "zipf": -1}, "zipf must be a number in [0.0, 4.0]"),
    ],
)
def test_bad_entries_give_one_line(entry: dict, message: str) -> None:
    with pytest.raises(EisError) as exc:
        features_spec(entry, "suite 't'")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_ids_are_content_hashes() -> None:
    a, b = FeatureSpec("a"), FeatureSpec("a", seed=1)
    assert a.case_id == FeatureSpec("a").case_id != b.case_id
    assert FeatureSpec("a", steps=5).case_id == a.case_id  # toy-only fields do not change a synthetic case


def test_generation_is_deterministic_and_linear() -> None:
    spec = FeatureSpec("g", n_features=10, d=5, n_train=256, n_eval=64)
    (s1, t1, _), (s2, t2, _) = generate(spec), generate(spec)
    assert torch.equal(s1.train_activations, s2.train_activations)
    assert all(torch.equal(t1[k], t2[k]) for k in t1)
    torch.testing.assert_close(s1.train_activations, t1["features_train"] @ t1["dictionary"])
    torch.testing.assert_close(t1["dictionary"].norm(dim=1), torch.ones(10))


def test_sparsity_correlation_and_hierarchy() -> None:
    plain = sample_features(FeatureSpec("p", p_active=0.1), 20000, stream(0, "t")) > 0
    assert abs(plain.float().mean().item() - 0.1) < 0.005
    corr = sample_features(FeatureSpec("c", p_active=0.1, correlation=0.8), 20000, stream(0, "t")) > 0
    both = lambda f: (f[:, 0] & f[:, 1]).float().mean().item()  # noqa: E731
    assert both(corr) > 3 * both(plain)  # a correlated pair fires together far above chance (0.01)
    spec = FeatureSpec("h", p_active=0.2, parents=2, children=3, p_child=0.5)
    f = sample_features(spec, 20000, stream(0, "t")) > 0
    kids = f[:, 2:5]  # parent 0's children
    assert not (kids & ~f[:, :1]).any()  # a child never fires without its parent
    assert abs(kids[f[:, 0]].float().mean().item() - 0.5) < 0.03
    assert f[:, 2:8].any()


def test_power_law_firing_rates() -> None:
    spec = FeatureSpec("z", n_features=16, d=8, p_active=0.05, zipf=1.0)
    p = firing_probabilities(spec)
    assert p.mean().item() == pytest.approx(0.05) and p[0] / p[1] == pytest.approx(2.0)
    f = sample_features(spec, 40000, stream(0, "t")) > 0
    rates = f.double().mean(0)
    assert abs(rates[0].item() - p[0].item()) < 0.01 and abs(rates[-1].item() - p[-1].item()) < 0.005
    assert (firing_probabilities(FeatureSpec("u", p_active=0.05)) == 0.05).all()
    assert FeatureSpec("u").case_id != FeatureSpec("u", zipf=1.0).case_id


def test_built_case_through_the_kind_registry(fresh_home) -> None:
    spec = FeatureSpec("feat-build", n_features=10, d=5, n_train=256, n_eval=64)
    case, trained = build_case(spec)
    again, trained_again = build_case(spec)
    assert trained and not trained_again
    opened = open_case(case.root)
    assert isinstance(opened, FeatureCase) and opened.meta["kind"] == "features"
    assert opened.width == 10 and opened.activations("eval").shape == (64, 5)
    assert "dictionary" not in opened.meta and "features_train" not in str(opened.meta)
    truth = opened.truth()
    torch.testing.assert_close(opened.activations("train"), truth.features["train"] @ truth.dictionary)
    with pytest.raises(EisError, match="unknown split 'test'; valid: train, eval"):
        opened.activations("test")


def test_toy_case_reads_the_hidden_layer() -> None:
    spec = FeatureSpec(
        "feat-toy", source="toy", n_features=8, d=4, p_active=0.1, steps=300, n_train=256, n_eval=64
    )
    case, _ = build_case(spec)
    truth = case.truth()
    model = case.model("cpu")
    with torch.no_grad():
        hidden = model.toy.hidden(truth.features["eval"])
    torch.testing.assert_close(case.activations("eval"), hidden)
    # the dictionary is the toy model's embedding, normalised; at least half of the features are represented
    w = model.toy.W.detach().T
    keep = truth.represented
    assert keep.float().mean() >= 0.5
    torch.testing.assert_close(truth.dictionary[keep], w[keep] / w[keep].norm(dim=1, keepdim=True))


def test_cli_lists_and_shows_a_feature_case() -> None:
    from typer.testing import CliRunner

    from eis.cli import app

    spec = FeatureSpec("feat-cli", n_features=10, d=5, n_train=256, n_eval=64)
    build_case(spec)
    listed = CliRunner().invoke(app, ["zoo", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "feat-cli" in listed.output, listed.output
    shown = CliRunner().invoke(app, ["zoo", "show", "feat-cli"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "n_features" in shown.output and "mean_l0" in shown.output, shown.output


def test_cli_refuses_a_bad_features_table_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from eis.cli import app

    suite = tmp_path / "bad.toml"
    suite.write_text('[[features]]\nname = "x"\nn_features = 8\nd = 8\n')
    result = CliRunner().invoke(app, ["zoo", "build", str(suite)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "d (8) must be below n_features (8)" in result.output
