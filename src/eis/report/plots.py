"""Matplotlib figures for the HTML report, returned as base64 PNG data URIs (the report stays one file).

Figures are drawn on ``matplotlib.figure.Figure`` directly (no pyplot), so the caller's backend and
global figure state are untouched.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

TOOL_COLOR = "#3b6fb6"
CONTROL_COLOR = "#d08a2e"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _to_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return data_uri(buf.getvalue())


def _errors(df: pd.DataFrame) -> np.ndarray:
    mean, lo, hi = (df[c].to_numpy(float) for c in ("mean", "lo", "hi"))
    err = np.vstack([mean - lo, hi - mean])
    return np.nan_to_num(np.clip(err, 0, None), nan=0.0)


def leaderboard_chart(lb: pd.DataFrame, metric: str, higher_is_better: bool = True) -> str | None:
    """Horizontal bars: each tool's headline mean with its 95% CI; controls in orange."""
    lb = lb[np.isfinite(lb["mean"].to_numpy(float))]
    if lb.empty:
        return None
    lb = lb.iloc[::-1]  # best at the top
    fig = Figure(figsize=(6.4, 0.9 + 0.32 * len(lb)))
    ax = fig.add_subplot()
    colors = [CONTROL_COLOR if c else TOOL_COLOR for c in lb["control"]]
    y = np.arange(len(lb))
    ax.barh(y, lb["mean"], xerr=_errors(lb), color=colors, capsize=3, error_kw={"elinewidth": 1})
    ax.set_yticks(y, [str(t) for t in lb["tool"]])
    ax.set_xlabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better; bars: 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _to_uri(fig)


def flaw_chart(by_flaw: pd.DataFrame, metric: str, tool_order: list[str]) -> str | None:
    """Grouped bars: each tool's headline mean per flaw type, with 95% CIs."""
    if by_flaw.empty:
        return None
    flaws = sorted(by_flaw["flaw"].astype(str).unique())
    tools = [t for t in tool_order if t in set(by_flaw["tool"])]
    if len(flaws) < 2 or not tools:
        return None
    fig = Figure(figsize=(max(6.4, 0.5 * len(tools) * len(flaws) / 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / len(flaws)
    x = np.arange(len(tools))
    for i, flaw in enumerate(flaws):
        sub = by_flaw[by_flaw["flaw"].astype(str) == flaw].set_index("tool").reindex(tools)
        means = sub["mean"].to_numpy(float)
        ax.bar(
            x + (i - (len(flaws) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            label=flaw,
            yerr=_errors(sub.reset_index()),
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_xticks(x, tools, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(title="flaw", fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if not any(math.isfinite(v) for v in by_flaw["mean"]):
        return None
    return _to_uri(fig)


def figure_uri(fig: Figure) -> str:
    """A track's own figure (``Track.figures``) as a data URI."""
    return _to_uri(fig)
