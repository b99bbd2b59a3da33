"""A tool's refusal (ToolRefusal) makes its cell "not applicable": recorded, summarized, resumed and reported
apart from failures."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import bench_fakes as bf
import pytest
from rich.console import Console
from torch import nn

import eis.cli.bench as bench
from eis.errors import ToolRefusal
from eis.report import build_report_data, print_report, write_report
from eis.results import load, open_store
from eis.runner import BenchSummary, run_benchmark
from eis.tools.base import TOOLS

TRACK = ["fake-localize"]
REASON = "fake-refuse has no rule for BatchNorm"
TOOLS_RUN = ["fake-oracle", "fake-refuse", "fake-raise"]


@dataclasses.dataclass
class Refuses(bf.Oracle):
    """The oracle, except that it refuses models with BatchNorm (two-line message: the store keeps one)."""

    name: ClassVar[str] = "fake-refuse"

    def attribute(self, model, inputs, target):
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            raise ToolRefusal(f"{REASON}\nsecond line that the store leaves out")
        return super().attribute(model, inputs, target)


@dataclasses.dataclass
class NormCase(bf.FakeCase):
    """A fake case whose model starts with a BatchNorm layer."""

    def model(self, device=None) -> nn.Module:
        return nn.Sequential(nn.BatchNorm2d(1), *super().model(device)).eval()


def cases() -> list[bf.FakeCase]:
    """fake-0 (patch), fake-1 (blend) and fake-norm: 3 cases x 5 tools (controls added) = 15 cells."""
    return [*bf.make_cases(2), NormCase(id="fakecase0002", name="fake-norm")]


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    TOOLS.register(Refuses.name, Refuses)
    try:
        yield
    finally:
        TOOLS.unregister(Refuses.name)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("na") / "r.sqlite"


@pytest.fixture(scope="module")
def first(store: Path) -> BenchSummary:
    return run_benchmark(cases(), TOOLS_RUN, TRACK, workers=0, store=store)


def test_refusal_is_recorded_as_not_applicable(first: BenchSummary, store: Path) -> None:
    df = load(store).set_index(["tool", "case_name"])
    na = df.loc[("fake-refuse", "fake-norm")]
    assert na["status"] == "not applicable" and na["error"] == REASON
    assert "traceback" not in na["extras"] and na["scores"] == {}
    assert df.loc[("fake-refuse", "fake-0"), "status"] == "ok"
    assert df.loc[("fake-raise", "fake-norm"), "status"] == "failed"
    with open_store(store) as st:
        assert st.keys(status="not applicable") == {na["key"]} and st.gallery([na["key"]]) == {}


def test_summary_counts_refusals_apart(first: BenchSummary) -> None:
    assert (first.total, first.ran, first.failed, first.not_applicable) == (15, 15, 3, 1)
    assert {f["tool"] for f in first.failures} == {"fake-raise"}
    want = {"track": "fake-localize", "tool": "fake-refuse", "case": "fake-norm", "error": REASON}
    assert first.refusals == [want]
    assert "15 cells: 15 run now (3 failed, 1 not applicable), 0 already in" in first.line()


def test_summary_listing_shows_refusals_calmly(first: BenchSummary, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(
        bench, "console", Console(file=out, force_terminal=True, color_system="standard", width=300)
    )
    bench.print_summary(first)
    lines = out.getvalue().splitlines()
    na = [ln for ln in lines if "fake-refuse" in ln]
    assert len(na) == 1 and "not applicable" in na[0] and REASON in na[0]
    assert "failed" not in na[0] and "\x1b[31m" not in na[0]  # not listed, nor coloured, as a failure
    assert sum("fake-raise" in ln and "\x1b[31m" in ln for ln in lines) == 3


def test_resume_and_retry_failed_do_not_rerun_refusals(first: BenchSummary, store: Path) -> None:
    with open_store(store) as st:
        before = {r["key"]: r["finished_at"] for r in st.records() if r["status"] == "not applicable"}
    again = run_benchmark(cases(), TOOLS_RUN, TRACK, workers=0, store=store)
    assert (again.ran, again.cached) == (0, 15)
    retry = run_benchmark(cases(), TOOLS_RUN, TRACK, workers=0, store=store, retry_failed=True)
    assert (retry.ran, retry.failed, retry.not_applicable, retry.cached) == (3, 3, 0, 12)
    with open_store(store) as st:
        after = {r["key"]: r["finished_at"] for r in st.records() if r["status"] == "not applicable"}
        assert after == before and len(after) == 1
        key = next(iter(after))
        assert st.has(key, failed=False) and not st.has(key, ok_only=True)


def test_report_lists_refusals_under_not_applicable_only(
    first: BenchSummary, store: Path, tmp_path: Path
) -> None:
    data = build_report_data(store)
    sec = next(s for s in data.sections if s.name == "fake-localize")
    lb = sec.leaderboard.set_index("tool")
    assert (lb.loc["fake-refuse", "failed"], lb.loc["fake-refuse", "not_applicable"]) == (0, 1)
    assert (lb.loc["fake-raise", "failed"], lb.loc["fake-raise", "not_applicable"]) == (3, 0)
    assert lb.loc["fake-refuse", "n"] == 2  # the refused cell is in no mean
    assert set(sec.failures["tool"]) == {"fake-raise"}
    assert list(sec.not_applicable["tool"]) == ["fake-refuse"]

    html = write_report(store, tmp_path).read_text()
    failed_part = html.split('<table class="failures">')[1].split("</table>")[0]
    na_part = html.split('<table class="not-applicable">')[1].split("</table>")[0]
    assert "fake-refuse" not in failed_part and "fake-raise" in failed_part
    assert "fake-refuse" in na_part and "fake-norm" in na_part and REASON in na_part
    assert "second line" not in html and "1 cell not applicable" in html and "3 failed cells" in html
    row = html.split('data-tool="fake-refuse">')[1].split("</tr>")[0]
    assert "0 / 3" in row and "(1 not applicable)" in row and 'class="fail"' not in row

    console = Console(file=io.StringIO(), width=200)
    print_report(data, console)
    assert "not applicable" in console.file.getvalue()
