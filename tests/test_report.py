"""The report: per-track sections from Track.summarize, the terminal table, a self-contained HTML file."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import bench_fakes as bf
import pandas as pd
import pytest
from rich.console import Console

from eis.report import build_report_data, print_report, write_report
from eis.report.plots import leaderboard_chart
from eis.results.store import Store
from eis.runner import run_benchmark

TOOLS_RUN = ["fake-oracle", "fake-grad", bf.Grad(scale=2.0), "fake-raise"]
LOCALIZE_TOOLS = {
    "fake-oracle",
    "fake-grad",
    "fake-grad(scale=2.0)",
    "fake-raise",
    "fake-blank",
    "fake-random",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "r.sqlite"
    run_benchmark(bf.make_cases(4), TOOLS_RUN, ["fake-localize", "fake-spread"], workers=0, store=path)
    with Store(path) as st:
        ghost = dict(st.records()[0], key="ghost1", track="ghost-track")
        stale = dict(st.records()[0], key="stale1", track_version="0", tool="fake-old")
        st.put(ghost)
        st.put(stale)
    return path


@pytest.fixture(scope="module")
def html(store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = write_report(store, tmp_path_factory.mktemp("out"))
    assert out.name == "index.html"
    return out.read_text()


class Tables(HTMLParser):
    """Collects the rows (cell texts) of every table by its class and data-track."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[tuple[str, str], list[dict]] = {}
        self.current: list[dict] | None = None
        self.row: dict | None = None
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault((a.get("class", ""), a.get("data-track", "")), [])
        elif tag == "tr" and self.current is not None:
            self.row = {"class": a.get("class", ""), "cells": []}
        elif tag in ("td", "th") and self.row is not None:
            self.row["cells"].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self.row is not None and self.current is not None:
            self.current.append(self.row)
            self.row = None
        elif tag == "table":
            self.current = None
        elif tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell and self.row is not None:
            self.row["cells"][-1] += data


def parse(html: str) -> dict:
    p = Tables()
    p.feed(html)
    return p.tables


def test_sections_leaderboards_and_notes(store: Path) -> None:
    data = build_report_data(store)
    assert [s.name for s in data.sections] == ["fake-localize", "fake-spread"]
    assert any("ghost-track" in n and "not registered" in n for n in data.notes)
    loc, spread = data.sections
    assert any("1 cells from other versions" in n for n in loc.notes)
    lb = loc.leaderboard.set_index("tool")
    assert set(lb.index) == LOCALIZE_TOOLS and loc.headline == "hit"
    assert loc.leaderboard["tool"].iloc[0] == "fake-oracle" and lb.loc["fake-oracle", "mean"] == 1.0
    assert (
        lb.loc["fake-blank", "control"]
        and lb.loc["fake-random", "control"]
        and not lb.loc["fake-grad", "control"]
    )
    assert (lb.loc["fake-raise", "failed"], lb.loc["fake-raise", "cells"]) == (3, 3)  # 3 flawed cases of 4
    assert pd.isna(lb.loc["fake-raise", "mean"]) and loc.leaderboard["tool"].iloc[-1] == "fake-raise"
    assert lb.loc["fake-grad", "verdict"] in ("beats blank: yes", "beats blank: no")
    # lower is better on fake-spread: the blank map (spread 1.0) comes last among the tools that ran
    order = [t for t in spread.leaderboard["tool"] if t != "fake-raise"]
    assert order[-1] == "fake-blank"
    assert set(loc.by_flaw["flaw"]) == {"patch", "blend"} and len(loc.failures) == 3
    g = loc.gallery[0]
    assert g["case"] == "fake-0" and g["flaw"] == "patch" and set(g["shared"]) == {"input", "mask"}
    assert [t for t, _ in g["tools"]] == [t for t in loc.leaderboard["tool"] if t != "fake-raise"]
    assert all(set(imgs) == {"map"} for _, imgs in g["tools"])


def test_html_is_self_contained_with_one_row_per_tool(html: str) -> None:
    assert "<script" not in html
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [
        r for r in refs if not r.startswith("data:")
    ]
    assert "http://" not in html and "https://" not in html and "@import" not in html
    tables = parse(html)
    rows = tables[("leaderboard", "fake-localize")][1:]
    assert sorted(r["cells"][1].replace("control", "") for r in rows) == sorted(LOCALIZE_TOOLS)
    controls = {r["cells"][1].replace("control", "") for r in rows if r["class"] == "control"}
    assert controls == {"fake-blank", "fake-random"}
    assert len(tables[("leaderboard", "fake-spread")]) - 1 == len(LOCALIZE_TOOLS)
    assert [c.strip() for c in tables[("by-flaw", "")][0]["cells"]] == ["tool", "blend", "patch"]
    assert "ghost-track" in html and "not registered" in html and "3 failed cells" in html
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(pngs) == 4 + 3 * 7  # 2 plots per track + gallery: 3 cases x (input, mask, 5 maps)
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_terminal_leaderboard(store: Path) -> None:
    console = Console(record=True, width=200)
    print_report(build_report_data(store), console)
    text = console.export_text()
    assert "fake-localize: hit (higher is better)" in text and "fake-spread: spread (lower is better)" in text
    assert "fake-blank (control)" in text and "1.000 [1.000, 1.000]" in text and "3/3" in text
    assert "ghost-track" in text


def test_summarize_failure_and_empty_store_are_notes(store: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(self, rows):
        raise KeyError("hit")

    monkeypatch.setattr(bf.FakeSpread, "summarize", broken)
    data = build_report_data(store)
    spread = data.sections[1]
    assert spread.notes == ["summarize failed: KeyError: 'hit'"]
    assert set(spread.leaderboard["tool"]) == LOCALIZE_TOOLS and spread.leaderboard["mean"].isna().all()
    Store(tmp_path / "empty.sqlite").close()
    empty = write_report(tmp_path / "empty.sqlite", tmp_path / "rep").read_text()
    assert "the store holds no cells yet" in empty


def test_leaderboard_chart_is_a_png_data_uri() -> None:
    lb = pd.DataFrame(
        {"tool": ["a", "b"], "control": [False, True], "mean": [0.5, 0.2], "lo": [0.4, 0.1], "hi": [0.6, 0.3]}
    )
    uri = leaderboard_chart(lb, "iou")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:4] == b"\x89PNG"
    assert leaderboard_chart(lb.assign(mean=float("nan")), "iou") is None
