"""Bootstrap CIs and verdicts on data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eis.errors import EisError
from eis.stats import CI, bootstrap_ci, paired_bootstrap_ci, verdict


def test_constant_data_gives_zero_width_ci() -> None:
    ci = bootstrap_ci([[0.3] * 5, [0.3] * 7, [0.3] * 2])
    assert ci.mean == pytest.approx(0.3)
    assert ci.lo == ci.mean == ci.hi
    assert (ci.n, ci.n_items) == (3, 14)


def test_flat_bootstrap_matches_normal_theory() -> None:
    x = np.random.default_rng(0).normal(2.0, 1.0, size=400)
    ci = bootstrap_ci(x, n_resamples=2000)
    assert ci.mean == pytest.approx(x.mean())
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert ci.lo < ci.mean < ci.hi
    assert (ci.hi - ci.lo) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_ci(list(x)) == bootstrap_ci(x)  # lists and arrays are the same flat data


def test_cases_are_the_resampling_unit() -> None:
    # Two models, each scoring identically on all its 30 inputs: a resample of 2 cases averages to 0, 0.5
    # or 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval is exactly [0, 1]. Pooling the 60
    # inputs as independent would give roughly 0.5 +- 0.13.
    ci = bootstrap_ci([[0.0] * 30, [1.0] * 30], n_resamples=4000)
    assert ci.mean == 0.5
    assert (ci.lo, ci.hi) == (0.0, 1.0)


def test_single_case_still_has_input_noise() -> None:
    x = np.random.default_rng(1).normal(0.0, 1.0, size=64)
    ci = bootstrap_ci([x])
    assert ci.n == 1 and ci.n_items == 64
    assert ci.hi - ci.lo > 0.2  # within-case noise is kept, not a zero-width "certainty"


def test_seeded_and_deterministic() -> None:
    data = [np.random.default_rng(i).random(10) for i in range(5)]
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)
    assert bootstrap_ci(data, seed=3) != bootstrap_ci(data, seed=4)


def test_non_finite_values_are_dropped() -> None:
    ci = bootstrap_ci([[1.0, math.nan], [math.nan], [3.0]])
    assert (ci.n, ci.n_items, ci.mean) == (2, 2, 2.0)
    empty = bootstrap_ci([[math.nan]])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert verdict(empty) == "n/a"


def test_paired_bootstrap_cancels_shared_noise() -> None:
    rng = np.random.default_rng(2)
    control = [rng.normal(0, 1, size=20) for _ in range(4)]
    tool = [c + 0.1 for c in control]  # always exactly 0.1 better on the same inputs
    paired = paired_bootstrap_ci(tool, control)
    assert paired.mean == pytest.approx(0.1)
    assert paired.lo == pytest.approx(0.1) and paired.hi == pytest.approx(0.1)
    assert verdict(paired) == "yes"
    # Unpaired, the same 0.1 gap is lost in the input noise.
    a, b = bootstrap_ci(tool), bootstrap_ci(control)
    assert a.lo < b.hi


def test_verdicts() -> None:
    rng = np.random.default_rng(3)
    control = [rng.normal(0.1, 0.05, size=16) for _ in range(5)]
    better = [c + 0.5 + rng.normal(0, 0.05, size=16) for c in control]
    worse = [c - 0.5 + rng.normal(0, 0.05, size=16) for c in control]
    same = [c + rng.normal(0, 0.05, size=16) for c in control]
    assert verdict(paired_bootstrap_ci(better, control)) == "yes"
    assert verdict(paired_bootstrap_ci(worse, control)) == "no"
    assert verdict(paired_bootstrap_ci(same, control)) == "within noise"
    assert verdict(CI(0.1, 0.0, 0.2, 3, 30)) == "within noise"  # lower bound must be strictly > 0
    assert verdict(CI(0.5, 0.5, 0.5, 1, 1)) == "within noise"  # one item is never evidence


def test_paired_needs_aligned_samples() -> None:
    with pytest.raises(EisError, match="same number of cases"):
        paired_bootstrap_ci([[1.0]], [[1.0], [2.0]])
    with pytest.raises(EisError, match="case 0 has 2 items"):
        paired_bootstrap_ci([[1.0, 2.0]], [[1.0]])
    with pytest.raises(EisError, match="confidence level"):
        bootstrap_ci([1.0, 2.0], level=95)
