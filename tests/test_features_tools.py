"""The features family: every tool passes the contract; acceptance numbers on an easy synthetic case."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eis.errors import EisError
from eis.testing import check_tool
from eis.tools.base import list_tools, make_tool
from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures
from eis.tools.features.contract import contract_task
from eis.tracks.features import FeaturesTrack
from eis.tracks.metrics import features as fm
from eis.zoo.build import build_case
from eis.zoo.features.spec import FeatureSpec

FAST = {n: {"steps": 60} for n in list_tools("features") if n.startswith("sae_")}
# The smoke suite's synthetic case: 16 features in 12 dimensions, each firing with p = 0.04.
EASY = FeatureSpec(
    "features-synthetic", n_features=16, d=12, p_active=0.04, seed=1, n_train=4096, n_eval=1024
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_family_lists_saes_baselines_and_the_control() -> None:
    names = set(list_tools("features"))
    assert {"sae_relu_l1", "sae_topk", "sae_batchtopk", "sae_jumprelu", "sae_matryoshka"} <= names
    assert {"probe", "diff_in_means", "pca", "ica", "neurons", "random_directions"} <= names
    assert list_tools("features", controls=True) == ["random_directions"]


@pytest.mark.parametrize("name", list_tools("features"))
def test_contract(name: str) -> None:
    report = check_tool(name, FAST.get(name))
    assert "bad inputs raise EisError" in report.passed and not report.refusals, str(report)


def test_contract_catches_violations() -> None:
    @dataclasses.dataclass
    class TooWide(FeatureTool):
        name = "too_wide"

        def find(self, task: FeatureTask) -> FoundFeatures:
            task.check()
            m = task.width + 1
            return FoundFeatures(torch.ones(m, task.train.shape[1]), torch.zeros(len(task.inputs), m))

    @dataclasses.dataclass
    class Mutates(FeatureTool):
        name = "mutates"

        def find(self, task: FeatureTask) -> FoundFeatures:
            task.check()
            task.train.mul_(2)
            return FoundFeatures(torch.eye(task.train.shape[1]), task.inputs.clone())

    @dataclasses.dataclass
    class NoChecks(FeatureTool):
        name = "no_checks"

        def find(self, task: FeatureTask) -> FoundFeatures:
            d = task.inputs.shape[-1] if task.inputs.dim() == 2 else 1
            return FoundFeatures(torch.eye(d), task.inputs.reshape(len(task.inputs), -1)[:, :d].clone())

    with pytest.raises(AssertionError, match="too_wide returned directions of shape"):
        check_tool(TooWide())
    with pytest.raises(AssertionError, match="mutates: changed the task's train"):
        check_tool(Mutates())
    with pytest.raises(AssertionError, match="no_checks: a task with .* did not raise EisError"):
        check_tool(NoChecks())


def test_supervised_tools_need_labels() -> None:
    task = contract_task()
    with pytest.raises(EisError, match="a supervised tool needs labels"):
        make_tool("probe").find(task)


@pytest.fixture(scope="module")
def easy_results() -> dict[str, tuple[dict, dict]]:
    case, _ = build_case(EASY)
    track = FeaturesTrack()
    out = {}
    for name in ("probe", "diff_in_means", "sae_relu_l1", "random_directions"):
        r = track.run(case, make_tool(name), seed=1)
        out[name] = (r.scores, r.items)
    return out


def test_probe_given_labels_detects_every_feature(easy_results) -> None:
    """The ceiling: given the labels, a logistic probe detects the true features best, on held-out inputs."""
    scores, items = easy_results["probe"]
    assert scores["auroc"] >= 0.99 and scores["f1"] >= 0.9
    # superposition (16 features in 12 dimensions) keeps a linear read-out from being perfect on all
    assert min(items["auroc"]) >= 0.95
    assert all(scores["auroc"] > easy_results[t][0]["auroc"] for t in easy_results if t != "probe")


def test_difference_in_means_recovers_the_dictionary_exactly(easy_results) -> None:
    """With independent features, E[x | feature on] - E[x | off] is the feature's direction."""
    assert min(easy_results["diff_in_means"][1]["mcc"]) >= 0.99


def test_an_sae_recovers_the_easy_case_and_random_directions_sit_at_chance(easy_results) -> None:
    sae, rand = easy_results["sae_relu_l1"][0], easy_results["random_directions"][0]
    assert sae["mcc"] >= 0.9
    chance = sae["chance_mcc"]
    assert 0.4 < chance < 0.7  # 16 random directions in 12 dimensions match far above 0
    assert abs(rand["mcc"] - chance) < 0.05
    assert sae["mcc"] > chance + 0.3


def test_track_refuses_other_tools() -> None:
    case, _ = build_case(EASY)
    with pytest.raises(EisError, match="features runs features tools; 'saliency' is a attribution tool"):
        FeaturesTrack().run(case, make_tool("saliency"))


def test_jumprelu_straight_through_gradients() -> None:
    """The step's and the JumpReLU's threshold gradients follow Rajamanoharan et al. (2024): only inputs
    within half a bandwidth of the threshold contribute, with -1/eps and -theta/eps."""
    from eis.tools.features.sae import _JumpReLU, _Step

    z = torch.tensor([[0.46, 0.54, 0.9, 0.1]])
    theta = torch.full((4,), 0.5, requires_grad=True)
    _Step.apply(z, theta, 0.1).sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), [-10.0, -10.0, 0.0, 0.0], rtol=1e-6)
    theta.grad = None
    zz = z.clone().requires_grad_()
    out = _JumpReLU.apply(zz, theta, 0.1)
    np.testing.assert_allclose(out.detach().numpy(), [[0.0, 0.54, 0.9, 0.0]], rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), [-5.0, -5.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(zz.grad.numpy(), [[0.0, 1.0, 1.0, 0.0]])


def test_topk_and_batch_topk_keep_the_right_entries() -> None:
    from eis.tools.features.sae import topk_batch, topk_per_row

    z = torch.tensor([[3.0, 1.0, 2.0], [0.5, -1.0, 0.2]])
    assert torch.equal(topk_per_row(z, 1), torch.tensor([[3.0, 0, 0], [0.5, 0, 0]]))
    assert torch.equal(topk_batch(z, 1), torch.tensor([[3.0, 0, 2.0], [0, 0, 0]]))  # 2 largest of the batch
    assert fm.l0(topk_batch(z, 1)) == 1.0


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("sae_topk", {"k": 0}, "sae_topk: setting k must be an integer >= 1, got 0"),
        ("sae_batchtopk", {"k": 1.5}, "sae_batchtopk: setting k must be an integer >= 1, got 1.5"),
        ("sae_relu_l1", {"l1": -0.1}, "sae_relu_l1: setting l1 must be a number >= 0, got -0.1"),
        ("sae_jumprelu", {"bandwidth": 0}, "sae_jumprelu: setting bandwidth must be a number > 0, got 0"),
        ("sae_matryoshka", {"steps": 0}, "sae_matryoshka: setting steps must be an integer >= 1, got 0"),
        ("sae_topk", {"lr": float("nan")}, "sae_topk: setting lr must be a number > 0, got nan"),
        ("probe", {"l2": -1}, "probe: setting l2 must be a number >= 0, got -1"),
        ("ica", {"max_iter": 0}, "ica: setting max_iter must be an integer >= 1, got 0"),
    ],
)
def test_bad_sae_settings_give_one_line(name: str, settings: dict, message: str) -> None:
    with pytest.raises(EisError) as exc:
        make_tool(name, **settings).find(contract_task(supervised=True))
    assert str(exc.value) == message
