"""The feature_steering track: activation addition with found directions on a toy model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eis.errors import EisError
from eis.tools.base import make_tool
from eis.tracks.feature_steering import FeatureSteeringTrack, steering_effects
from eis.zoo.build import build_case
from eis.zoo.features.generate import ToyModel
from eis.zoo.features.spec import FeatureSpec

TOY = FeatureSpec(
    "steer-toy", source="toy", n_features=8, d=4, p_active=0.05, steps=400, n_train=1024, n_eval=256
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_steering_effects_by_hand() -> None:
    """W = identity (2 features in 2 dims), b = 0: adding 2 * e_0 raises output 0 by 2 and output 1 by 0."""
    model = ToyModel(2, 2)
    with torch.no_grad():
        model.W.copy_(torch.eye(2))
    hidden = torch.zeros(3, 2)
    silent = torch.tensor([[True, True], [True, False], [False, True]])
    gains, spills = steering_effects(model, hidden, silent, torch.eye(2), torch.tensor([2.0, 1.0]))
    np.testing.assert_allclose(gains, [2.0, 1.0])
    np.testing.assert_allclose(spills, [0.0, 0.0])


def test_true_directions_steer_and_random_ones_do_worse() -> None:
    case, _ = build_case(TOY)
    track = FeatureSteeringTrack()
    assert track.applies_to(case)
    dim = track.run(case, make_tool("diff_in_means"), seed=0).scores
    rand = track.run(case, make_tool("random_directions"), seed=0).scores
    assert dim["steer_success"] >= 0.9 and dim["steer_gain"] > 0.8 and dim["steer_spill"] < 0.1
    assert rand["steer_success"] <= dim["steer_success"] - 0.4 and rand["steer_spill"] > 0.3
    with pytest.raises(EisError, match="feature_steering runs features tools"):
        track.run(case, make_tool("saliency"))


def test_applies_to_toy_cases_only() -> None:
    synthetic, _ = build_case(FeatureSpec("steer-synthetic", n_features=8, d=4, n_train=256, n_eval=64))
    assert not FeatureSteeringTrack().applies_to(synthetic)
