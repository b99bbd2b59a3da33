"""A second fake suite beside bench_fakes' ``fake-suite``, for tests that run two different suites at once
on one store (an ``EIS_PLUGINS`` module: ``EIS_PLUGINS=bench_fakes,concurrency_fakes``)."""

from __future__ import annotations

import os

from bench_fakes import FakeCase

from eis.runner.plugins import SUITES, register_suite


def suite_b() -> list[FakeCase]:
    """Cases that share no id with ``fake-suite``'s (``fakecase....``)."""
    n = int(os.environ.get("FAKE_SUITE_B_N", "4"))
    flaws = ("blend", "clean", "patch")
    return [FakeCase(id=f"fakeb{i + 0x100:04x}", name=f"fake-b-{i}", flaw=flaws[i % 3]) for i in range(n)]


if "fake-suite-b" not in SUITES:
    register_suite("fake-suite-b", suite_b)
