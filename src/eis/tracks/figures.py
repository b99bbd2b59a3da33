"""Line plots of per-tool mean curves, for tracks whose cells store curves in their extras."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

Curve = tuple[Sequence[float], Sequence[float]]  # (x, y)


def mean_curves(rows: pd.DataFrame, extract: Callable[[dict], Curve | None]) -> dict[str, tuple[bool, Curve]]:
    """Per tool: (is control, mean curve over its successful cells); ``extract`` reads one cell's curve."""
    out: dict[str, tuple[bool, Curve]] = {}
    ok = rows[rows["status"] == "ok"]
    for tool, g in ok.groupby("tool", sort=True):
        curves = [c for c in (extract(e) for e in g["extras"]) if c is not None]
        if not curves:
            continue
        x = np.asarray(curves[0][0], float)
        ys = [np.asarray(y, float) for _, y in curves if len(y) == len(x)]
        out[str(tool)] = (bool(g["control"].any()), (x.tolist(), np.mean(ys, axis=0).tolist()))
    return out


def curve_panels(panels: dict[str, dict[str, tuple[bool, Curve]]], xlabel: str, ylabel: str) -> Figure:
    """One subplot per panel, one line per tool; controls dashed so that they read as the floor to beat."""
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for tool, (control, (x, y)) in series.items():
            ax.plot(
                x,
                y,
                linestyle="--" if control else "-",
                linewidth=1.6 if control else 1.0,
                label=f"{tool} (control)" if control else tool,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, fontsize=7, frameon=False
        )
    fig.tight_layout()
    return fig
