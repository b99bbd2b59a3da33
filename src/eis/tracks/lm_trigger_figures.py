"""The lm_trigger track's figure: recall and REASR against the query budget, one line per tool."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from eis.tracks.figures import Curve, mean_curves


def _extract(metric: str) -> Callable[[dict], Curve | None]:
    """A reader of one cell's ``metric`` curve, for :func:`mean_curves`."""

    def read(extras: dict) -> Curve | None:
        curve = extras.get("curve") if isinstance(extras, dict) else None
        return (curve["budget"], curve[metric]) if curve and curve.get("budget") else None

    return read


def budget_curves(rows: pd.DataFrame) -> Figure | None:
    """Panels of recall and REASR on planted cases (and REASR on clean twins, the null, where run) against
    the query budget (log scale), per tool; controls dashed, a one-point curve drawn as a marker. None
    when no cell holds a curve."""
    ok = rows[rows["status"] == "ok"]
    clean = ok["flaw"].astype(str) == "clean"
    panels = {
        "recall (backdoors)": mean_curves(ok[~clean], _extract("recall")),
        "REASR (backdoors)": mean_curves(ok[~clean], _extract("reasr")),
        "REASR (clean twins: the null)": mean_curves(ok[clean], _extract("reasr")),
    }
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    tools = sorted({t for series in panels.values() for t in series})
    colours = {t: f"C{i % 10}" for i, t in enumerate(tools)}
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for tool, (control, (x, y)) in series.items():
            ax.plot(
                x,
                y,
                color=colours[tool],
                linestyle="--" if control else "-",
                marker="s" if len(x) == 1 else "o",
                markersize=6 if len(x) == 1 else 3,
                label=f"{tool} (control)" if control else tool,
            )
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("query budget per target")
        ax.grid(alpha=0.3)
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
            labels[lab] = lab
    fig.legend(
        list(handles.values()), list(labels), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
        fontsize=7, frameon=False,
    )  # fmt: skip
    fig.tight_layout()
    return fig
