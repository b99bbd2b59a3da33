"""The features track's metrics against hand-worked values (eis.tracks.metrics.features)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from eis.tracks.metrics import features as fm

S = 1 / math.sqrt(2)


def test_cosines_max_and_matched_by_hand() -> None:
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    found = torch.tensor([[1.0, 1.0], [0.0, -2.0]])  # norms and signs must not matter
    cos = fm.abs_cosines(true, found)
    np.testing.assert_allclose(cos, [[S, 0.0], [S, 1.0]], atol=1e-12)
    np.testing.assert_allclose(fm.max_cosines(cos), [S, 1.0], atol=1e-12)
    # one-to-one: latent 1 goes to feature 1 (1.0), so feature 0 gets latent 0 (S); total S + 1
    np.testing.assert_allclose(fm.matched_cosines(cos), [S, 1.0], atol=1e-12)


def test_matching_credits_one_latent_once() -> None:
    """One latent near two features: MMCS credits it twice, the matched MCC once (the other gets 0)."""
    true = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    found = torch.tensor([[1.0, 0.0]])
    cos = fm.abs_cosines(true, found)
    np.testing.assert_allclose(fm.max_cosines(cos), [1.0, 0.8], atol=1e-12)
    np.testing.assert_allclose(fm.matched_cosines(cos), [1.0, 0.0], atol=1e-12)


def test_hungarian_beats_greedy() -> None:
    """Greedy would give feature 0 its best latent (0.9) and leave feature 1 with 0.1: total 1.0; the
    optimal matching takes 0.8 + 0.7 = 1.5."""
    cos = np.array([[0.9, 0.8], [0.7, 0.1]])
    np.testing.assert_allclose(fm.matched_cosines(cos), [0.8, 0.7])


def test_auroc_by_hand_and_against_sklearn() -> None:
    scores = np.array([[0.1], [0.4], [0.35], [0.8]])
    labels = np.array([[False], [False], [True], [True]])
    np.testing.assert_allclose(fm.auroc_columns(scores, labels), [0.75])  # 3 of 4 pairs ordered right
    ties = fm.auroc_columns(np.ones((4, 1)), labels)
    np.testing.assert_allclose(ties, [0.5])
    assert np.isnan(fm.auroc_columns(scores, np.zeros((4, 1), bool))[0])
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 3)).round(1)  # rounding makes ties
    y = rng.random((200, 3)) < 0.3
    want = [roc_auc_score(y[:, j], s[:, j]) for j in range(3)]
    np.testing.assert_allclose(fm.auroc_columns(s, y), want, atol=1e-12)


def test_f1_by_hand() -> None:
    fires = np.array([[True], [True], [False], [False]])
    labels = np.array([[True], [False], [True], [False]])
    np.testing.assert_allclose(fm.f1_columns(fires, labels), [0.5])  # tp 1, fp 1, fn 1
    np.testing.assert_allclose(fm.f1_columns(~labels, labels), [0.0])
    assert np.isnan(fm.f1_columns(fires, np.ones((4, 1), bool))[0])


def test_detection_uses_the_signed_best_latent() -> None:
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    found = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [S, S]])  # feature 0's best latent points the other way
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    acts = feats @ found.T
    out = fm.detection(true, found, acts, feats > 0)
    np.testing.assert_allclose(out["auroc"], [1.0, 1.0])
    np.testing.assert_allclose(out["f1"], [1.0, 1.0])


def test_explained_variance_and_l0_by_hand() -> None:
    x = torch.tensor([[0.0], [2.0]])
    assert fm.explained_variance(x, torch.tensor([[1.0], [1.0]])) == pytest.approx(0.0)
    assert fm.explained_variance(x, x) == pytest.approx(1.0)
    assert fm.explained_variance(x, torch.tensor([[0.0], [1.0]])) == pytest.approx(0.5)
    assert fm.l0(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, -1.0]])) == pytest.approx(1.0)


def test_absorption_by_hand() -> None:
    """Parent 0 with child 1. The parent's latent (0) fires whenever the parent fires alone (2 rows) but on
    only 1 of the 4 rows where the child fires too: silent 3/4 vs 0/2, absorption 0.75."""
    labels = np.array([[1, 0], [1, 0], [1, 1], [1, 1], [1, 1], [1, 1], [0, 0]], bool)
    fires = np.array([[1], [1], [1], [0], [0], [0], [0]], bool)
    out = fm.absorption({0: [1]}, fires, labels, np.array([0, 0]))
    np.testing.assert_allclose(out, [0.75])
    assert np.isnan(fm.absorption({0: [1]}, fires[:2], labels[:2], np.array([0, 0]))[0])


def test_chance_level_matches_random_directions() -> None:
    """The Monte Carlo chance level is what random directions reach, and it grows as d shrinks."""
    gen = torch.Generator().manual_seed(3)
    true = torch.randn(24, 16, generator=gen)
    chance = fm.chance_matched(true, 24, draws=32)
    draws = [
        fm.matched_cosines(fm.abs_cosines(true, torch.randn(24, 16, generator=gen))).mean() for _ in range(32)
    ]
    assert abs(chance - float(np.mean(draws))) < 0.02
    assert fm.chance_matched(torch.randn(24, 4, generator=gen), 24) > chance + 0.2
