"""Shared fixtures: an isolated EIS_HOME for the session and the smoke zoo, built once across workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = Path(os.environ.get("EIS_TEST_HOME", ROOT / ".eis-test"))
os.environ["EIS_HOME"] = str(TEST_HOME)
TEST_HOME.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)  # tests run in parallel workers on 2 cores: one thread each avoids oversubscription


@pytest.fixture(scope="session")
def smoke_cases():
    """The smoke suite's built cases (trained once, then cached under the test EIS_HOME)."""
    import eis.zoo

    with FileLock(str(TEST_HOME / "smoke.lock")):
        return eis.zoo.build_suite("smoke")


@pytest.fixture(scope="session")
def smoke(smoke_cases):
    """The smoke cases by name."""
    return {c.name: c for c in smoke_cases}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny tensors gain nothing from threads, and on shared cores threads fight; restored afterwards, in case
    code under test changed it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An empty EIS_HOME for tests that must train or corrupt artifacts themselves."""
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# Hypothesis (tests/test_fuzz_*.py): a fixed seed and no example database in CI, so every run tries the same
# inputs; per-test example counts are fixed in the tests. HYPOTHESIS_PROFILE=explore draws fresh inputs.
from hypothesis import HealthCheck, settings  # noqa: E402

_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, database=None, deadline=None, suppress_health_check=_OK)
settings.register_profile("explore", deadline=None, database=None, suppress_health_check=_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
