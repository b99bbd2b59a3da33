"""Transfer between tiers and the Casper et al. protocol table, on small synthetic stores worked by hand."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from eis.report import CASPER_2023, build_report_data, casper_table, print_report, render_html, tier_transfer
from eis.results.store import Store
from eis.runner.plugins import load_builtins
from eis.tracks.base import TRACKS
from eis.tracks.metrics.localization import METRIC_NAMES
from eis.zoo.datasets import DATASETS

REAL, TOY = "tier-test-realistic", "digits"


@pytest.fixture(autouse=True)
def realistic_dataset() -> Iterator[None]:
    """A dataset of the realistic tier (its factory is never called)."""
    load_builtins()
    DATASETS.register(REAL, lambda: None, tier="realistic")
    try:
        yield
    finally:
        DATASETS.unregister(REAL)


def _row(
    track: str, dataset: str, case: str, tool: str, scores: dict[str, float], **kw: Any
) -> dict[str, Any]:
    row = {
        "key": f"{track}|{dataset}|{case}|{tool}",
        "case_id": case,
        "case_name": case,
        "dataset": dataset,
        "arch": "cnn",
        "flaw": "patch",
        "tool": tool,
        "control": tool in ("edge_detector", "blank_map", "random_map"),
        "settings": {},
        "track": track,
        "track_version": TRACKS.get(track).version,
        "status": "ok",
        "scores": scores,
        "items": {},
        "extras": {},
    }
    return row | kw


def _means(track: str, toy: dict[str, list[float]], real: dict[str, list[float]]) -> pd.DataFrame:
    """Rows of ``track``: per tier, tool -> its headline score on each case."""
    head = TRACKS.get(track).headline
    rows = []
    for dataset, by_tool in ((TOY, toy), (REAL, real)):
        for tool, values in by_tool.items():
            rows += [_row(track, dataset, f"{dataset}-{i}", tool, {head: v}) for i, v in enumerate(values)]
    return pd.DataFrame(rows)


# small per-case noise around well separated tool means: every resample keeps the order
TOY_SCORES = {
    "a": [0.80, 0.82, 0.78],
    "b": [0.50, 0.52, 0.48],
    "c": [0.30, 0.31, 0.29],
    "d": [0.10, 0.12, 0.08],
}


def test_identical_rankings_give_one() -> None:
    real = {t: [v - 0.05 for v in vs] for t, vs in TOY_SCORES.items()}  # every tool a bit worse, same order
    (tt,) = tier_transfer(_means("localize", TOY_SCORES, real), n_resamples=200)
    assert (tt.track, tt.headline, tt.n_tools, tt.n_cases) == (
        "localize",
        "pearson",
        4,
        {"toy": 3, "realistic": 3},
    )
    assert tt.spearman == 1.0 and tt.spearman_lo == 1.0 and tt.spearman_hi == 1.0
    a = tt.tools.set_index("tool").loc["a"]
    # hand-worked: toy mean 0.80, realistic 0.75, change -0.05; rank 1 on both
    assert a["toy_mean"] == pytest.approx(0.80) and a["realistic_mean"] == pytest.approx(0.75)
    assert a["change"] == pytest.approx(-0.05)
    assert a["toy_lo"] <= 0.80 <= a["toy_hi"] and a["change_lo"] <= -0.05 <= a["change_hi"]
    assert (a["toy_rank"], a["realistic_rank"], a["toy_n"], a["realistic_n"]) == (1, 1, 3, 3)
    assert list(tt.tools["tool"]) == ["a", "b", "c", "d"]


def test_reversed_rankings_give_minus_one() -> None:
    real = {t: vs for t, vs in zip(TOY_SCORES, reversed(TOY_SCORES.values()), strict=True)}
    (tt,) = tier_transfer(_means("localize", TOY_SCORES, real), n_resamples=200)
    assert tt.spearman == -1.0 and (tt.spearman_lo, tt.spearman_hi) == (-1.0, -1.0)
    ranks = tt.tools.set_index("tool")[["toy_rank", "realistic_rank"]]
    assert ranks.loc["a"].tolist() == [1, 4] and ranks.loc["d"].tolist() == [4, 1]


def test_noisy_rankings_have_a_ci_holding_the_estimate() -> None:
    rng = np.random.default_rng(1)
    toy = {t: list(rng.normal(m, 0.3, 6)) for t, m in zip("abcde", (0.5, 0.4, 0.3, 0.2, 0.1), strict=True)}
    real = {t: list(rng.normal(m, 0.3, 4)) for t, m in zip("abcde", (0.1, 0.4, 0.3, 0.5, 0.2), strict=True)}
    (tt,) = tier_transfer(_means("localize", toy, real), n_resamples=500, seed=3)
    means = {t: (np.mean(toy[t]), np.mean(real[t])) for t in toy}
    tools = tt.tools.set_index("tool")
    for t, (m_toy, m_real) in means.items():
        assert tools.loc[t, "toy_mean"] == pytest.approx(m_toy)
        assert tools.loc[t, "change"] == pytest.approx(m_real - m_toy)
        assert tools.loc[t, "change_lo"] <= tools.loc[t, "change"] <= tools.loc[t, "change_hi"]
    from scipy.stats import spearmanr

    want = spearmanr([means[t][0] for t in "abcde"], [means[t][1] for t in "abcde"]).statistic
    assert tt.spearman == pytest.approx(want)
    assert -1.0 <= tt.spearman_lo <= tt.spearman <= tt.spearman_hi <= 1.0
    assert tt.spearman_lo < tt.spearman_hi  # 4-6 noisy cases: the ranking is uncertain
    # the same seed gives the same interval
    (again,) = tier_transfer(_means("localize", toy, real), n_resamples=500, seed=3)
    assert (again.spearman_lo, again.spearman_hi) == (tt.spearman_lo, tt.spearman_hi)
    assert any("4 realistic cases" in n for n in tt.notes)
    assert not any("different" in n for n in tt.notes)


def test_flaws_and_tools_scored_on_other_cases() -> None:
    rows = _means("localize", TOY_SCORES, TOY_SCORES)
    extra = _row("localize", REAL, "real-blend", "a", {"pearson": -1.0}, flaw="blend")
    rows = pd.concat([rows, pd.DataFrame([extra])], ignore_index=True)
    (tt,) = tier_transfer(rows, n_resamples=50)
    a = tt.tools.set_index("tool").loc["a"]
    assert a["realistic_n"] == 4 and a["realistic_mean"] == pytest.approx((0.8 * 3 - 1.0) / 4)
    assert any("tools scored on different realistic cases" in n for n in tt.notes)
    (patch,) = tier_transfer(rows, flaws=["patch"], n_resamples=50)
    assert patch.tools.set_index("tool").loc["a", "realistic_mean"] == pytest.approx(0.8)
    assert patch.spearman == 1.0


def test_lower_is_better_ranks_the_lowest_first() -> None:
    assert TRACKS.get("sanity").higher_is_better is False
    toy = {"x": [0.1, 0.1], "y": [0.5, 0.5], "z": [0.9, 0.9]}
    (tt,) = tier_transfer(_means("sanity", toy, toy), n_resamples=50)
    assert tt.spearman == 1.0
    assert tt.tools.set_index("tool").loc["x", ["toy_rank", "realistic_rank"]].tolist() == [1, 1]


def test_only_tracks_on_both_tiers_and_current_versions() -> None:
    rows = _means("localize", TOY_SCORES, TOY_SCORES)
    toy_only = _means("sanity", {"x": [0.1]}, {})
    old = rows.assign(track_version="0", scores=[{"pearson": -1.0}] * len(rows), key=rows["key"] + "old")
    failed = rows.assign(status="failed", scores=[{}] * len(rows), key=rows["key"] + "f")
    result = tier_transfer(pd.concat([rows, toy_only, old, failed], ignore_index=True), n_resamples=50)
    assert [tt.track for tt in result] == ["localize"]
    assert result[0].tools.set_index("tool").loc["a", "toy_mean"] == pytest.approx(0.80)
    assert tier_transfer(toy_only) == [] and tier_transfer(rows.iloc[:0]) == []


def test_too_few_tools_give_no_rank_correlation() -> None:
    (tt,) = tier_transfer(
        _means("localize", {"a": [0.2], "b": [0.1]}, {"a": [0.3], "b": [0.4]}), n_resamples=20
    )
    assert math.isnan(tt.spearman) and tt.n_tools == 2
    assert any("no rank correlation below 3" in n for n in tt.notes)


# -- detect: AUROC over models, and decisions where the cells hold them ------------------------------------
def _detect(dataset: str, clean: list[float], trojaned: list[float], tool: str, flags: bool) -> list[dict]:
    rows = []
    for i, (s, flaw) in enumerate([(s, "clean") for s in clean] + [(s, "patch") for s in trojaned]):
        extras = {"details": {"flagged": s > 0.25}} if flags else {}
        rows.append(_row("detect", dataset, f"{dataset}-m{i}", tool, {"score": s}, flaw=flaw, extras=extras))
    return rows


def test_detect_transfers_auroc_and_decisions() -> None:
    rows = []
    for tool, flags in (("nc", True), ("ws", False), ("rs", False)):
        shift = {"nc": 0.0, "ws": 0.01, "rs": 0.02}[tool]
        # toy: clean {0.1, 0.2} below trojaned {0.3, 0.4}: AUROC 1; realistic: clean {0.1, 0.4}, trojaned
        # {0.2, 0.3}: 2 of 4 pairs ordered right -> 0.5
        rows += _detect(TOY, [0.1 + shift, 0.2 + shift], [0.3 + shift, 0.4 + shift], tool, flags)
        rows += _detect(REAL, [0.1 + shift, 0.4 + shift], [0.2 + shift, 0.3 + shift], tool, flags)
    (tt,) = tier_transfer(pd.DataFrame(rows), n_resamples=100)
    nc = tt.tools.set_index("tool").loc["nc"]
    assert (nc["toy_mean"], nc["realistic_mean"], nc["change"]) == (1.0, 0.5, -0.5)
    assert nc["realistic_lo"] <= 0.5 <= nc["realistic_hi"]
    assert any("not a decision at a threshold" in n for n in tt.notes)
    assert any("TPR/FPR not available): rs, ws" in n for n in tt.notes)
    d = tt.decisions.set_index("tier")
    assert list(tt.decisions["tool"]) == ["nc", "nc"]
    # flagged = score > 0.25: toy trojaned {0.3, 0.4} both, clean none; realistic trojaned {0.3}, clean {0.4}
    assert (d.loc["toy", "tpr"], d.loc["toy", "fpr"]) == (1.0, 0.0)
    assert (d.loc["realistic", "tpr"], d.loc["realistic", "fpr"]) == (0.5, 0.5)
    assert d.loc["toy", "n_trojaned"] == 2 and d.loc["toy", "n_clean"] == 2
    # Wilson interval of 1/2: (0.5 +- 1.96 sqrt(1/8 + 1.96^2/16)) / (1 + 1.96^2/2)
    z = 1.959964
    half = z * math.sqrt(0.25 / 2 + z * z / 16) / (1 + z * z / 2)
    assert d.loc["realistic", "tpr_lo"] == pytest.approx(0.5 - half)
    assert d.loc["realistic", "tpr_hi"] == pytest.approx(0.5 + half)


# -- the Casper et al. protocol -------------------------------------------------------------------------
def _localize(dataset: str, case: str, tool: str, pearson: list[float], l1: list[float]) -> dict[str, Any]:
    items = {m: [0.5] * len(pearson) for m in METRIC_NAMES} | {"pearson": pearson, "l1_distance": l1}
    scores = {m: float(np.mean(v)) for m, v in items.items()}
    extras = {"input_indices": list(range(len(pearson)))}
    return _row("localize", dataset, case, tool, scores, items=items, extras=extras)


def _casper_rows() -> pd.DataFrame:
    rows = []
    # (pearson, l1) per input on two cases per tier; the blank map's L1 is the mask share 0.04
    tools = {
        "kernel_shap": ([0.7, 0.8, 0.9], [0.01, 0.02, 0.015]),
        "saliency": ([-0.05, 0.0, -0.1], [0.30, 0.35, 0.40]),
        "edge_detector": ([0.2, 0.25, 0.15], [0.50, 0.45, 0.55]),
        "blank_map": ([0.0, 0.0, 0.0], [0.04, 0.04, 0.04]),
    }
    for dataset in (TOY, REAL):
        for c in range(2):
            for tool, (p, d) in tools.items():
                rows.append(_localize(dataset, f"{dataset}-{c}", tool, p, d))
    rows.append(
        _localize(REAL, "real-blend", "kernel_shap", [0.0], [0.9]) | {"flaw": "blend", "key": "blend"}
    )
    return pd.DataFrame(rows)


def test_casper_table() -> None:
    assert CASPER_2023.pearson["kernel_shap"] == (0.81, 0.81) and "Casper et al. 2023" in CASPER_2023.citation
    table = casper_table(_casper_rows(), n_resamples=200).set_index("tool")
    assert list(table.index) == ["kernel_shap", "edge_detector", "blank_map", "saliency"]  # by Pearson
    ks = table.loc["kernel_shap"]
    assert ks["n"] == 2  # patch cases only: the blend case is left out
    assert ks["pearson"] == pytest.approx(0.8) and ks["l1_distance"] == pytest.approx(0.015)
    assert ks["pearson_lo"] <= 0.8 <= ks["pearson_hi"]
    assert (ks["vs_edge_detector"], ks["vs_blank_map"]) == ("yes", "yes")
    assert (ks["paper_pearson_resnet50"], ks["paper_pearson_vgg19"], ks["paper_pearson"]) == (
        0.81,
        0.81,
        "0.81 / 0.81",
    )
    sal = table.loc["saliency"]
    assert (sal["vs_edge_detector"], sal["vs_blank_map"], sal["paper_pearson"], sal["paper_l1"]) == (
        "no",
        "no",
        "about 0",
        "did not",
    )
    assert math.isnan(sal["paper_pearson_resnet50"])
    edge = table.loc["edge_detector"]
    assert (edge["vs_edge_detector"], edge["paper_pearson"], edge["paper_l1"]) == (
        "control",
        "0.22 / 0.23",
        "did not (worst)",
    )
    assert table.loc["blank_map", "paper_pearson"] == "" and table.loc[
        "blank_map", "l1_distance"
    ] == pytest.approx(0.04)
    assert casper_table(_casper_rows(), "toy", n_resamples=50)["n"].max() == 2
    assert casper_table(_casper_rows().iloc[:0]).empty


def test_report_shows_the_tier_tables(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as st:
        for rec in _casper_rows().to_dict("records"):
            st.put(rec)
    data = build_report_data(path)
    assert [tt.track for tt in data.transfer] == ["localize"]
    assert data.transfer[0].spearman == 1.0  # same ranking on both tiers
    assert sorted(data.casper) == ["realistic", "toy"]
    console = Console(record=True, width=200)
    print_report(data, console)
    text = console.export_text()
    assert (
        "localize: toy -> realistic, pearson (higher is better); Spearman 1.000 [1.000, 1.000] over 4" in text
    )
    assert "Casper et al. protocol, realistic tier, patch trojans (2 cases)" in text
    assert "Casper et al. protocol, toy tier" in text and "0.81 / 0.81" in text
    html = render_html(data)
    assert '<section id="tiers">' in html and 'href="#tiers"' in html
    assert '<table class="transfer" data-track="localize">' in html
    assert (
        '<table class="casper" data-tier="realistic">' in html
        and '<table class="casper" data-tier="toy">' in html
    )


def test_report_without_a_realistic_tier_has_no_tier_tables(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as st:
        for rec in _casper_rows().query("dataset == @TOY").to_dict("records"):
            st.put(rec)
    data = build_report_data(path)
    assert data.transfer == [] and data.casper == {}
    assert 'id="tiers"' not in render_html(data)


def test_synthesize_transfers_on_the_cells_correct_score():
    """The synthesize track's headline (accuracy) is the mean of its cells' 0/1 ``correct``."""
    rows = []
    for tier, ds in (("toy", "digits"), ("realistic", "photos")):
        for case in range(4):
            for tool, correct in (("a", 1.0), ("b", float(case % 2)), ("c", 0.0)):
                rows.append(
                    {"track": "synthesize", "status": "ok", "dataset": ds, "case_id": f"{tier}{case}",
                     "tool": tool, "control": tool == "c", "flaw": "patch", "scores": {"correct": correct},
                     "items": {}, "extras": {}, "settings": {}, "finished_at": 0.0,
                     "track_version": str(TRACKS.get("synthesize").version)}
                )  # fmt: skip
    (tr,) = tier_transfer(pd.DataFrame(rows))
    means = tr.tools.set_index("tool")
    assert means.loc["a", "toy_mean"] == 1.0 and means.loc["b", "realistic_mean"] == 0.5
    assert tr.spearman == pytest.approx(1.0)
