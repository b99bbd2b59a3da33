"""The repair track's figure: C-ACC vs ASR, one arrow per trojaned case from before to after repair."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

FLAW_COLOURS = {
    "patch": "tab:blue", "blend": "tab:orange", "natural": "tab:green", "warp": "tab:red",
    "spurious": "tab:purple",
}  # fmt: skip


def _scores(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def before_after_scatter(rows: pd.DataFrame, columns: int = 4) -> Figure | None:
    """One panel per method: arrows (C-ACC, ASR) before -> after for each trojaned case; None if no data."""
    ok = rows[(rows["status"] == "ok") & (rows["flaw"].astype(str) != "clean")]
    panels = []
    for tool, g in ok.groupby("tool", sort=True):
        pts = []
        for _, r in g.iterrows():
            s = _scores(r["scores"])
            if {"c_acc", "asr", "c_acc_before", "asr_before"} <= s.keys():
                pts.append((str(r["flaw"]), s["c_acc_before"], s["asr_before"], s["c_acc"], s["asr"]))
        if pts:
            panels.append((f"{tool} (control)" if bool(g["control"].any()) else str(tool), pts))
    if not panels:
        return None
    lowest = min(min(p[1], p[3]) for _, pts in panels for p in pts)
    left = max(0.0, min(0.9, lowest) - 0.03)  # accuracies sit near the top: zoom in, the same for every panel
    ncol = min(columns, len(panels))
    nrow = -(-len(panels) // ncol)
    fig = Figure(figsize=(3.2 * ncol, 3.0 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        for flaw, a0, s0, a1, s1 in pts:
            colour = FLAW_COLOURS.get(flaw, "tab:gray")
            ax.scatter([a0], [s0], s=14, facecolors="none", edgecolors=colour)
            ax.annotate("", xy=(a1, s1), xytext=(a0, s0), arrowprops={"arrowstyle": "->", "color": colour})
            ax.scatter([a1], [s1], s=14, color=colour)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(left, 1.005)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("C-ACC", fontsize=8)
        ax.set_ylabel("ASR", fontsize=8)
        ax.grid(alpha=0.3)
    handles = [axes.flat[0].scatter([], [], color=c, s=14, label=f) for f, c in FLAW_COLOURS.items()]
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, fontsize=7, frameon=False
    )
    fig.tight_layout()
    return fig
