"""The feature_usefulness track on a smoke trojan: a latent that fires on the trigger and only on it."""

from __future__ import annotations

import pytest
import torch

from eis.errors import EisError
from eis.tools.base import make_tool
from eis.tracks.feature_usefulness import FeatureUsefulnessTrack, best_latent, penultimate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_best_latent_by_hand() -> None:
    """Latent 1 separates perfectly but fires on clean inputs with the wrong sign: it is flipped."""
    acts = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.2, -1.0], [0.1, -2.0]])
    labels = torch.tensor([False, False, True, True])
    out = best_latent(acts, labels)
    assert out == {"best_auroc": 1.0, "best_f1": 1.0, "clean_fire_rate": 0.0}


def test_penultimate_reads_the_last_linear_input(smoke) -> None:
    case = smoke["digits-cnn-patch"]
    model = case.model("cpu")
    x, _ = case.inputs(5)
    acts = penultimate(model, x, batch_size=2)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert acts.shape == (5, last.in_features)
    torch.testing.assert_close(last(acts), model(x))


def test_applies_to_trojans_only(smoke) -> None:
    track = FeatureUsefulnessTrack()
    assert track.applies_to(smoke["digits-cnn-patch"]) and track.applies_to(smoke["digits-cnn-spurious"])
    assert not track.applies_to(smoke["digits-cnn-clean"])
    assert not track.applies_to(smoke["digits-cnn-permuted"])
    with pytest.raises(EisError, match="feature_usefulness runs features tools"):
        track.run(smoke["digits-cnn-patch"], make_tool("saliency"))


def test_probe_is_the_ceiling_and_random_directions_fire_everywhere(smoke) -> None:
    track = FeatureUsefulnessTrack()
    case = smoke["digits-cnn-patch"]
    probe = track.run(case, make_tool("probe"), seed=3).scores
    rand = track.run(case, make_tool("random_directions"), seed=3).scores
    sae = track.run(case, make_tool("sae_batchtopk", steps=300), seed=3).scores
    assert probe["best_f1"] >= 0.95 and probe["clean_fire_rate"] <= 0.05
    assert rand["best_f1"] < probe["best_f1"] - 0.2  # a random direction that separates also fires on clean
    assert 0 <= sae["best_f1"] <= 1 and sae["l0"] < 10
