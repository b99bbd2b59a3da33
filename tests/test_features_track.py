"""The features track through the runner: cells, leaderboard with verdicts, the MCC-vs-L0 figure, report."""

from __future__ import annotations

import pytest

from eis.report.html import write_report
from eis.results import load
from eis.runner import DEFAULT_TRACKS, run_benchmark
from eis.tools.base import make_tool
from eis.tracks.features import FeaturesTrack, case_group
from eis.zoo.build import build_case
from eis.zoo.suites import load_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The smoke suite's two feature cases, a fast SAE, a probe and PCA (the control comes by itself)."""
    specs = [s for s in load_suite("smoke") if s.name.startswith("features-")]
    cases = [build_case(s)[0] for s in specs]
    store = tmp_path_factory.mktemp("features") / "cells.db"
    tools = [make_tool("sae_relu_l1", steps=300), "probe", "pca"]
    summary = run_benchmark(cases, tools=tools, tracks=["features"], workers=0, store=store)
    assert summary.failed == 0
    return store, load(store)


def test_features_is_a_default_track() -> None:
    assert "features" in DEFAULT_TRACKS


def test_cells_and_leaderboard(rows) -> None:
    _, df = rows
    assert set(df["tool"]) == {"sae_relu_l1", "probe", "pca", "random_directions"}
    assert set(df["flaw"]) == {"synthetic", "toy/hierarchical"}
    toy = df[(df["flaw"] == "toy/hierarchical") & (df["tool"] == "sae_relu_l1")].iloc[0]
    assert "absorption" in toy["scores"] and len(toy["items"]["absorption"]) == 2  # two parents
    long = FeaturesTrack().summarize(df)
    head = long[(long["flaw"] == "all") & (long["metric"] == "mcc")].set_index("tool")
    assert head.loc["random_directions", "verdict"] == "control"
    assert head.loc["sae_relu_l1", "verdict"].startswith("beats random_directions: yes")
    assert head.loc["sae_relu_l1", "n"] == 2 and head.loc["sae_relu_l1", "n_items"] == 28  # 16 + 12 features
    assert head.loc["sae_relu_l1", "lo"] <= head.loc["sae_relu_l1", "mean"] <= head.loc["sae_relu_l1", "hi"]
    assert {"mcc", "mmcs", "auroc", "f1", "l0", "chance_mcc"} <= set(long["metric"])


def test_figure_and_report(rows, tmp_path) -> None:
    store, df = rows
    figs = FeaturesTrack().figures(df)
    assert len(figs) == 1 and "MCC" in figs[0][0]
    labels = {t.get_text() for t in figs[0][1].axes[0].get_legend().get_texts()}
    assert {"sae_relu_l1", "probe", "random_directions (control)", "chance (random)"} <= labels
    html = write_report(store, tmp_path / "report").read_text()
    assert "Matched MCC (95% CI over cases and features) against L0" in html


def test_case_groups() -> None:
    assert case_group({"source": "synthetic"}) == "synthetic"
    assert case_group({"source": "toy", "parents": 2, "correlation": 0.5}) == "toy/hierarchical/correlated"
    assert case_group({"source": "synthetic", "parents": 8, "zipf": 1.0}) == "synthetic/hierarchical/zipf"
