"""The ``circuits`` track: do circuit-discovery tools find the circuit a transformer is known to use?

Asked of the zoo's circuit cases (compiled tracr programs and their realistic variants). Each tool gets a
:class:`~eis.tools.circuits.CircuitTask` (model, clean and corrupted tokens, answers, ablation type)
and returns node and edge scores; the track scores them against the case's sealed circuit, which is
defined under the case's ablation type:

- ``node_auc`` / ``node_ap``: ROC-AUC and average precision of the component (head, MLP) scores;
- ``edge_auc`` / ``edge_ap``: the same for the edge scores (Conmy et al. 2023 report ROC-AUC);
- MIB's faithfulness (Mueller et al. 2025): keep the top ``k`` % of edges, ablate the rest,
  f(k) = (m(C_k) - m(empty)) / (m(full) - m(empty)) at k in :data:`EDGE_PERCENTS`; ``cpr`` = area under
  f (higher better), ``cmd`` = area between f and 1 (lower better), trapezoids over the fraction of
  edges kept;
- tools that choose a circuit (ACDC) also get ``circuit_precision`` / ``circuit_recall`` of its edges.

Headline: ``node_auc``, with confidence intervals over cases (one value per case); the verdict compares
each tool with the best control on it, paired by case.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, roc_auc_score

from eis.errors import EisError
from eis.stats import CI, paired_bootstrap_ci, verdict
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool
from eis.tracks.base import CellResult, Track, register_track
from eis.tracks.figures import curve_panels, mean_curves
from eis.tracks.sanity import cell_groups, long_table
from eis.zoo.kinds import kind_of

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case

EDGE_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def ranking_scores(truth: list[int], scores: np.ndarray, prefix: str) -> dict[str, float]:
    """ROC-AUC and AP of ``scores`` against 0/1 ``truth``; nothing when the truth is all one class."""
    if not 0 < sum(truth) < len(truth):
        return {}
    return {
        f"{prefix}_auc": float(roc_auc_score(truth, scores)),
        f"{prefix}_ap": float(average_precision_score(truth, scores)),
    }


def faithfulness_curve(task: CircuitTask, edge_scores: torch.Tensor) -> tuple[list[float], dict[str, float]]:
    """f(k) at :data:`EDGE_PERCENTS`, and CPR / CMD (see the module docstring).

    Edges are ranked by score (ties by graph order); top-k keeps ceil(k% of edges), at least one.
    """
    n = len(task.graph.edges)
    order = torch.argsort(-edge_scores.double(), stable=True)
    masks = torch.zeros(len(EDGE_PERCENTS) + 2, n)
    for i, pct in enumerate(EDGE_PERCENTS):
        masks[i, order[: max(1, math.ceil(pct / 100 * n))]] = 1
    masks[-2] = 1  # the full model
    with torch.no_grad():
        m = task.run(edge_mask=masks.to(task.clean.device)).double().cpu()
    full, empty = float(m[-2]), float(m[-1])
    if abs(full - empty) < 1e-9:
        raise EisError("the metric does not change when every edge is ablated; faithfulness is undefined")
    f = ((m[:-2] - empty) / (full - empty)).tolist()
    x = np.asarray(EDGE_PERCENTS) / 100
    cpr = float(np.trapezoid(f, x))
    cmd = float(np.trapezoid(np.abs(1 - np.asarray(f)), x))
    return f, {"cpr": cpr, "cmd": cmd}


@register_track
class CircuitsTrack(Track):
    """Circuit discovery scored against the known circuits of compiled transformers."""

    name: ClassVar[str] = "circuits"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "circuits"
    headline: ClassVar[str] = "node_auc"
    summary: ClassVar[str] = "ROC-AUC of node / edge scores vs the known circuit; MIB faithfulness (CPR, CMD)"
    n_resamples: int = 1000

    def applies_to(self, case: Case) -> bool:
        return kind_of(case) == "circuit"

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, CircuitTool):
            raise EisError(f"circuits runs circuit tools; {tool.name!r} is a {tool.family or 'other'} tool")
        model = case.model()
        dev = next(model.parameters()).device
        clean, labels = case.inputs()  # type: ignore[call-arg]
        task = CircuitTask(model, clean.to(dev), case.corrupted().to(dev), labels.to(dev), case.ablation)  # type: ignore[attr-defined]
        result = tool.discover(task)
        graph = task.graph
        if not isinstance(result, CircuitScores) or result.nodes.shape != (len(graph.components),):
            raise EisError(f"{tool.name} returned node scores of the wrong shape")
        if result.edges.shape != (len(graph.edges),):
            raise EisError(f"{tool.name} returned edge scores of the wrong shape")
        truth = case.truth()
        node_truth = [int(c in truth.nodes) for c in graph.components]
        edge_truth = [int(e in truth.edges) for e in graph.edges]
        scores = ranking_scores(node_truth, result.nodes.double().numpy(), "node")
        scores |= ranking_scores(edge_truth, result.edges.double().numpy(), "edge")
        curve, areas = faithfulness_curve(task, result.edges)
        scores |= areas
        if result.circuit is not None:
            chosen = set(result.circuit)
            hits = len(chosen & truth.edges)
            scores["circuit_precision"] = hits / len(chosen) if chosen else 0.0
            scores["circuit_recall"] = hits / len(truth.edges) if truth.edges else 1.0
        variant = case.meta.get("variant", {})
        kind = "realistic" if variant.get("rotate") or variant.get("distractors") else "compiled"
        extras: dict[str, Any] = {
            "program": case.arch,
            "ablation": case.ablation,  # type: ignore[attr-defined]
            "faithfulness": {"k_percent": list(EDGE_PERCENTS), "f": curve},
            "n_nodes": len(graph.components),
            "n_edges": len(graph.edges),
        }
        return CellResult(scores=scores, flaw=f"{kind}/{case.ablation}", extras=extras)  # type: ignore[attr-defined]

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        if metric != self.headline or ci.n == 0:
            return ""
        if bool(rows.loc[rows["tool"] == tool, "control"].iloc[0]):
            return "control"
        mine = cell_groups(rows[rows["tool"] == tool], metric)
        best, best_mean = None, -math.inf
        for name in sorted({str(t) for t in rows.loc[rows["control"].astype(bool), "tool"]}):
            groups = cell_groups(rows[rows["tool"] == name], metric)
            # the control's mean over cases of its per-case means (a case may hold several items)
            means = [float(np.mean(f)) for v in groups.values() if (f := [x for x in v if math.isfinite(x)])]
            if means and (mean := float(np.mean(means))) > best_mean:
                best, best_mean = (name, groups), mean
        if best is None:
            return "beats the best control: n/a (no control run)"
        name, theirs = best
        shared = [c for c in mine if c in theirs]
        if not shared:
            return "beats the best control: n/a (no shared cases)"
        d = paired_bootstrap_ci(
            [mine[c] for c in shared], [theirs[c] for c in shared], n_resamples=self.n_resamples
        )
        return f"beats {name}: {verdict(d)} ({metric} {d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}])"

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        if "track" in rows.columns:
            rows = rows[rows["track"] == self.name]
        if rows.empty:
            return []

        def curve(extras: dict) -> tuple[list[float], list[float]] | None:
            f = extras.get("faithfulness")
            return (f["k_percent"], f["f"]) if f else None

        panels = {}
        for group in sorted({str(f) for f in rows["flaw"]}):
            series = mean_curves(rows[rows["flaw"] == group], curve)
            if series:
                panels[group] = series
        if not panels:
            return []
        fig = curve_panels(panels, "% of edges kept (log scale)", "faithfulness f(k)")
        for ax in fig.axes:
            ax.set_xscale("log")
        return [
            (
                "Faithfulness of the top-k% edges (MIB): f = 1 is the full model's metric, 0 the empty "
                "circuit's",
                fig,
            )
        ]
