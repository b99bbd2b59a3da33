"""From stored cells to report tables: one section per track, built with the track's own ``summarize``.

The report reads only the store. Rows from an older version of a track are left out (they were scored
differently); a track the store knows but this eis does not (e.g. a plugin's) is skipped with a note; a tool
run with several settings appears once per setting, labelled with the settings that differ from its
defaults; a track run with settings other than its defaults (a suite's ``[tracks.<name>]`` table) gets a
section of its own per setting, summarized by the track built with them. Cells not applicable (the tool
refused the case) are counted and listed apart from failed ones; neither enters a mean.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from eis.report.casper import casper_table
from eis.report.plots import figure_uri
from eis.report.transfer import REALISTIC, TOY, TrackTransfer, tier_transfer
from eis.results import load
from eis.results.store import NOT_APPLICABLE, OK, Store, open_store
from eis.tools.base import TOOLS
from eis.tracks.base import TRACKS, Track, stored_dict

GALLERY_CASES = 3
LEADERBOARD_COLUMNS = [
    "tool",
    "control",
    "mean",
    "lo",
    "hi",
    "n",
    "verdict",
    "failed",
    "not_applicable",
    "cells",
    "runtime_s",
    "sanity",
]


@dataclasses.dataclass
class TrackSection:
    """Everything the terminal and HTML reports show for one track."""

    name: str
    summary: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # the track's non-default settings
    headline: str = ""
    higher_is_better: bool = True
    leaderboard: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    long: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    by_flaw: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    failures: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    not_applicable: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # refusals, with reasons
    gallery: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (caption, PNG data URI)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def title(self) -> str:
        """The track's name, with its settings where they are not the defaults: ``localize(n_inputs=100)``."""
        if not self.settings:
            return self.name
        return f"{self.name}({', '.join(f'{k}={json.dumps(v)}' for k, v in sorted(self.settings.items()))})"


@dataclasses.dataclass
class ReportData:
    store_path: Path
    n_cells: int
    sections: list[TrackSection]
    notes: list[str]
    # tools' scores and rankings on the toy vs the realistic tier, per track scored on both
    transfer: list[TrackTransfer] = dataclasses.field(default_factory=list)
    # tier -> the Casper et al. protocol table (localize on patch trojans); shown when "realistic" is here
    casper: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)


def _settings_label(name: str, settings: dict[str, Any], all_settings: list[dict[str, Any]]) -> str:
    try:
        default = TOOLS.get(name)().settings()
    except Exception:
        default = all_settings[0]
    diff = {k: v for k, v in settings.items() if default.get(k) != v}
    if not diff:
        return name
    return f"{name}({', '.join(f'{k}={json.dumps(v)}' for k, v in sorted(diff.items()))})"


def label_tools(rows: pd.DataFrame) -> pd.DataFrame:
    """Replace ``tool`` by a label that tells apart runs of one tool with different settings."""
    rows = rows.copy()
    sjson = rows["settings"].map(lambda s: json.dumps(s, sort_keys=True))
    for name, idx in rows.groupby("tool").groups.items():
        distinct = sorted(set(sjson[idx]))
        if len(distinct) < 2:
            continue
        all_settings = [json.loads(s) for s in distinct]
        for s in distinct:
            label = _settings_label(str(name), json.loads(s), all_settings)
            rows.loc[idx[sjson[idx] == s], "tool"] = label
    return rows


def _leaderboard(track: Track, rows: pd.DataFrame, long: pd.DataFrame, headline: str) -> pd.DataFrame:
    pooled = long[(long["flaw"] == "all") & (long["metric"] == headline)] if len(long) else long
    by_tool = {str(r["tool"]): r for _, r in pooled.iterrows()} if len(pooled) else {}
    out = []
    for tool, g in rows.groupby("tool", sort=True):
        r = by_tool.get(str(tool))
        ok = g[g["status"] == OK]
        na = g["status"] == NOT_APPLICABLE
        out.append(
            {
                "tool": str(tool),
                "control": bool(g["control"].any()),
                "mean": float(r["mean"]) if r is not None else math.nan,
                "lo": float(r["lo"]) if r is not None else math.nan,
                "hi": float(r["hi"]) if r is not None else math.nan,
                "n": int(r["n"]) if r is not None and pd.notna(r["n"]) else len(ok),
                "verdict": str(r.get("verdict", "") or "") if r is not None else "",
                "failed": int(((g["status"] != OK) & ~na).sum()),
                "not_applicable": int(na.sum()),
                "cells": len(g),
                "runtime_s": float(ok["runtime_s"].mean()) if len(ok) else math.nan,
                "sanity": "",
            }
        )
    lb = pd.DataFrame(out, columns=LEADERBOARD_COLUMNS)
    key = lb["mean"] if track.higher_is_better else -lb["mean"]
    return (
        lb.assign(_k=key.fillna(-math.inf))
        .sort_values(["_k", "tool"], ascending=[False, True])
        .drop(columns="_k")
        .reset_index(drop=True)
    )


def _gallery(store: Store, rows: pd.DataFrame, tool_order: list[str]) -> list[dict[str, Any]]:
    """Up to GALLERY_CASES cases: images equal across tools (input, mask) once, then each tool's own."""
    ok = rows[rows["status"] == OK]
    pngs = store.gallery(ok["key"])
    out = []
    for case_name, g in sorted(ok.groupby("case_name"), key=lambda kv: str(kv[0])):
        per_tool = {r["tool"]: pngs[r["key"]] for _, r in g.iterrows() if r["key"] in pngs}
        if not per_tool:
            continue
        names = {n for imgs in per_tool.values() for n in imgs}
        shared = {}
        for n in sorted(names):
            values = [imgs[n] for imgs in per_tool.values() if n in imgs]
            if len(per_tool) > 1 and len(values) == len(per_tool) and len(set(values)) == 1:
                shared[n] = values[0]
        tools = [
            (t, {n: b for n, b in per_tool[t].items() if n not in shared})
            for t in tool_order
            if t in per_tool
        ]
        flaw = str(g["flaw"].iloc[0])
        out.append({"case": str(case_name), "flaw": flaw, "shared": shared, "tools": tools})
        if len(out) >= GALLERY_CASES:
            break
    return out


def track_settings_of(rows: pd.DataFrame) -> pd.Series:
    """Each cell's track settings (those other than the track's defaults) as canonical JSON, "{}" for none."""
    return rows["extras"].map(
        lambda e: json.dumps(stored_dict(e).get("track_settings") or {}, sort_keys=True)
    )


def build_section(
    store: Store, name: str, rows: pd.DataFrame, settings: dict[str, Any] | None = None
) -> TrackSection:
    """One track's section (or a section holding only a note when the track can't be summarized); the
    track is built with ``settings``, those its cells ran with."""
    settings = settings or {}
    if name not in TRACKS:
        return TrackSection(
            name=name,
            settings=settings,
            notes=[
                f"track {name!r} is in the store ({len(rows)} cells) but not registered in this eis; skipped"
            ],
        )
    try:
        track = TRACKS.get(name)(**settings)
    except Exception as exc:
        sec = TrackSection(name=name, settings=settings)
        sec.notes.append(f"{len(rows)} cells run with settings this eis refuses ({exc}); skipped")
        return sec
    sec = TrackSection(
        name=name, summary=track.summary, higher_is_better=track.higher_is_better, settings=settings
    )
    current = rows[rows["track_version"].astype(str) == str(track.version)]
    if len(current) < len(rows):
        sec.notes.append(
            f"{len(rows) - len(current)} cells from other versions of this track left out "
            f"(current version {track.version})"
        )
    if current.empty:
        sec.notes.append("no cells for the current version of this track")
        return sec
    current = label_tools(current)
    try:
        long = track.summarize(current.reset_index(drop=True))
    except Exception as exc:
        sec.notes.append(f"summarize failed: {type(exc).__name__}: {exc}")
        long = pd.DataFrame(columns=["tool", "control", "flaw", "metric", "mean", "lo", "hi", "n", "verdict"])
    sec.long = long
    metrics = list(dict.fromkeys(long["metric"])) if len(long) else []
    sec.headline = track.headline if track.headline in metrics or not metrics else metrics[0]
    sec.leaderboard = _leaderboard(track, current, long, sec.headline)
    if len(long):
        flawed = long[(long["flaw"] != "all") & (long["metric"] == sec.headline)]
        sec.by_flaw = flawed[["tool", "control", "flaw", "mean", "lo", "hi", "n"]].reset_index(drop=True)
    na = current["status"] == NOT_APPLICABLE
    bad = current[(current["status"] != OK) & ~na]
    sec.failures = bad[["tool", "case_name", "error"]].reset_index(drop=True)
    sec.not_applicable = current[na][["tool", "case_name", "error"]].reset_index(drop=True)
    sec.gallery = _gallery(store, current, list(sec.leaderboard["tool"]))
    try:
        sec.figures = [
            (caption, figure_uri(fig)) for caption, fig in track.figures(current.reset_index(drop=True))
        ]
    except Exception as exc:
        sec.notes.append(f"figures failed: {type(exc).__name__}: {exc}")
    return sec


def flag_sanity(sections: list[TrackSection]) -> None:
    """Copy each tool's sanity verdict ("pass" / "FAIL") into every leaderboard's ``sanity`` column, so that
    a map that does not depend on the model is flagged wherever the tool ranks well."""
    sanity = next((s for s in sections if s.name == "sanity" and not s.leaderboard.empty), None)
    if sanity is None:
        return
    verdicts = {
        r["tool"]: ("pass" if str(r["verdict"]).startswith("passes sanity: yes") else "FAIL")
        for _, r in sanity.leaderboard.iterrows()
        if str(r["verdict"]).startswith("passes sanity:")
    }
    for sec in sections:
        if sec is not sanity and not sec.leaderboard.empty:
            sec.leaderboard["sanity"] = sec.leaderboard["tool"].map(verdicts).fillna("")


def build_report_data(store: str | Path | Store | None = None) -> ReportData:
    """Load the store and build every track's section (tracks sorted by name)."""
    from eis.runner.plugins import load_builtins

    load_builtins()
    st = open_store(store, create=False)
    try:
        df = load(st)
        groups = df.assign(_ts=track_settings_of(df)).groupby(["track", "_ts"])
        sections = [  # by track name, its default settings first
            build_section(st, str(name), rows.drop(columns="_ts"), json.loads(ts))
            for (name, ts), rows in sorted(groups, key=lambda g: (str(g[0][0]), g[0][1] != "{}", g[0][1]))
        ]
    finally:
        if not isinstance(store, Store):
            st.close()
    flag_sanity(sections)
    notes = [n for s in sections if s.name not in TRACKS for n in s.notes]
    if df.empty:
        notes.append("the store holds no cells yet: run `eis bench SUITE` first")
    transfer, casper = tier_tables(df, notes)
    return ReportData(
        store_path=st.path,
        n_cells=len(df),
        sections=[s for s in sections if s.name in TRACKS],
        notes=notes,
        transfer=transfer,
        casper=casper,
    )


def tier_tables(df: pd.DataFrame, notes: list[str]) -> tuple[list[TrackTransfer], dict[str, pd.DataFrame]]:
    """The transfer between tiers (tracks scored on both) and the Casper et al. protocol tables (when the
    realistic tier has localize cells on patch trojans: that tier's, and the toy tier's beside it where
    any); a failure becomes a note, not a failed report."""
    transfer: list[TrackTransfer] = []
    casper: dict[str, pd.DataFrame] = {}
    try:
        transfer = tier_transfer(df)
    except Exception as exc:
        notes.append(f"transfer between tiers failed: {type(exc).__name__}: {exc}")
    try:
        realistic = casper_table(df, REALISTIC)
        if len(realistic):
            toy = casper_table(df, TOY)
            casper = {TOY: toy, REALISTIC: realistic} if len(toy) else {REALISTIC: realistic}
    except Exception as exc:
        notes.append(f"Casper et al. protocol table failed: {type(exc).__name__}: {exc}")
    return transfer, casper
