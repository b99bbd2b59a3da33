"""The ``sanity`` track: does a tool's map depend on the model at all? (Adebayo et al. 2018)

Model parameter randomisation: the tool explains the trained model and copies of it whose layers were
re-drawn at random (:mod:`eis.tracks.randomize`), cascading from the top layer down and one layer at a time,
and each randomised map is compared with the original by Spearman rank correlation (absolute and signed),
SSIM and HOG correlation (:mod:`eis.tracks.metrics.similarity`). Data randomisation compares the maps of two
models of one architecture, one trained on true labels and one on permuted labels
(:func:`data_randomization`; the zoo's ``label_permutation`` flaw trains the latter). The track runs it when
the same run holds a ``label_permutation`` case of the same dataset and architecture (its partner case,
:meth:`SanityTrack.partners`, part of the cell key), adding ``<metric>_data`` scores; it does not enter the
verdict.

Verdict. The *top layers* are the top half of the parameterised layers (rounded up) and at least the
*head* (every parameterised layer after the last one with a spatial output, the part that decides the
class): a SmallCNN's last conv and its two linear layers. A tool passes when the upper bound of the 95%
bootstrap CI of the mean Spearman-abs similarity, after cascading randomisation of the top layers, is
below ``threshold`` = 0.5. Why 0.5: a rank correlation below 0.5 shares less than a quarter of its rank
variance with the original map (rho^2 < 0.25), so the map has mostly changed; in the paper the methods
that pass fall to about 0.1-0.4 within the top layers while Guided Backprop stays above 0.8. On a digits
CNN Saliency lands near 0.4 (0.47 with the head alone randomised, too close to call, hence the top half
rather than the head), Grad-CAM near 0, Guided Backprop near 0.8. Using the CI's upper bound makes
"changed" a claim beyond the input-to-input noise.

Targets are the trained model's predictions, kept fixed for the randomised models.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from eis.stats import CI, bootstrap_ci
from eis.tracks import randomize
from eis.tracks.base import CellResult, Track, register_track, standalone
from eis.tracks.figures import curve_panels, mean_curves
from eis.tracks.metrics.similarity import SIMILARITIES, normalize_abs, similarities

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eis.tools.base import AttributionTool, Tool
    from eis.zoo.case import Case

THRESHOLD = 0.5
MODES = ("cascading", "independent")


@dataclasses.dataclass
class RandomizationResult:
    """Similarities of original vs randomised maps.

    layers: parameterised layers in forward order (the last is the top); head: the head layers;
    top: the top layers of the verdict (both in forward order).
    cascading / independent: layer -> metric -> (N,) similarities; for cascading, the entry for layer L
    is the model with L and every layer above it randomised; for independent, L alone.
    maps: "original", "randomised_top" and "randomised_all" (N, ...) maps, for the gallery.
    """

    layers: list[str]
    head: list[str]
    top: list[str]
    cascading: dict[str, dict[str, torch.Tensor]]
    independent: dict[str, dict[str, torch.Tensor]]
    maps: dict[str, torch.Tensor]

    def top_similarity(self) -> dict[str, torch.Tensor]:
        """Similarities after cascading randomisation of the top layers (the verdict's numbers)."""
        return self.cascading[self.top[0]]

    def all_similarity(self) -> dict[str, torch.Tensor]:
        """Similarities after cascading randomisation of every layer run (all layers unless ``depth``)."""
        return self.cascading[next(reversed(self.cascading))]


def _explain(tool: AttributionTool, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return tool.attribute(model, x, target).detach()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's predicted classes for ``x``."""
    return model(x).argmax(1)


def model_randomization(
    tool: AttributionTool,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    seed: int = 0,
    modes: tuple[str, ...] = MODES,
    metrics: tuple[str, ...] | None = None,
    depth: int | None = None,
) -> RandomizationResult:
    """Explain ``model`` and its randomised copies on ``x``; similarities per layer and mode.

    ``depth`` limits both modes to the top ``depth`` layers (None: all; the top layers always run).
    """
    target = predict(model, x) if target is None else target
    layers = randomize.parameterised_layers(model, x)
    head = randomize.head_layers(model, x)
    top_k = randomize.top_layers(model, x)
    original = _explain(tool, model, x, target)
    run = layers if depth is None else layers[-max(depth, len(top_k)) :]
    out: dict[str, dict[str, dict[str, torch.Tensor]]] = {"cascading": {}, "independent": {}}
    maps = {"original": original}
    for mode in modes:
        variants = randomize.cascading if mode == "cascading" else randomize.independent
        for layer, rmodel in variants(model, run, seed=seed):
            rmap = _explain(tool, rmodel, x, target)
            out[mode][layer] = similarities(original, rmap, metrics)
            if mode == "cascading" and layer == top_k[0]:
                maps["randomised_top"] = rmap
            if mode == "cascading" and layer == run[0]:
                maps["randomised_all"] = rmap
    return RandomizationResult(layers, head, top_k, out["cascading"], out["independent"], maps)


def data_randomization(
    tool: AttributionTool,
    model: nn.Module,
    permuted_model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    metrics: tuple[str, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Similarities between the maps of a model and of one trained on permuted labels, same inputs/targets.

    Targets default to ``model``'s predictions (the permuted-label model has no meaningful prediction).
    """
    target = predict(model, x) if target is None else target
    return similarities(_explain(tool, model, x, target), _explain(tool, permuted_model, x, target), metrics)


def passes(values: torch.Tensor | list[float], threshold: float = THRESHOLD) -> bool:
    """The verdict: upper 95% bootstrap bound of the mean top-layers Spearman-abs below ``threshold``."""
    vals = values.tolist() if isinstance(values, torch.Tensor) else list(values)
    ci = bootstrap_ci(vals)
    return bool(ci.n_items >= 2 and ci.hi < threshold)


def _curves(per_layer: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, list[float]]]:
    """metric -> {"mean", "lo", "hi"} lists over layers (in the order of ``per_layer``: top first)."""
    out: dict[str, dict[str, list[float]]] = {}
    for sims in per_layer.values():
        for metric, v in sims.items():
            ci = bootstrap_ci(v.tolist())
            d = out.setdefault(metric, {"mean": [], "lo": [], "hi": []})
            d["mean"].append(ci.mean)
            d["lo"].append(ci.lo)
            d["hi"].append(ci.hi)
    return out


def _image(m: torch.Tensor) -> np.ndarray:
    return normalize_abs(m[:1]).squeeze(0).float().cpu().numpy()


@register_track
class SanityTrack(Track):
    """Model parameter randomisation test (cascading and independent) with a pass/fail verdict per tool."""

    name: ClassVar[str] = "sanity"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "attribution"
    headline: ClassVar[str] = "spearman_abs_top"
    higher_is_better: ClassVar[bool] = False
    summary: ClassVar[str] = (
        "Do the maps change when the model's top layers are randomised? (Adebayo et al. 2018)"
    )

    n_inputs: ClassVar[int] = 32
    threshold: ClassVar[float] = THRESHOLD

    def applies_to(self, case: Case) -> bool:
        return standalone(case) and case.truth().kind == "clean"

    def partners(self, case: Case, cases: Sequence[Case], tool: Tool) -> tuple[Case, ...]:
        """The run's first case trained on permuted labels with ``case``'s dataset, architecture and shape."""
        kind = (case.dataset, case.arch, case.input_shape)
        for other in cases:
            same = (other.dataset, other.arch, other.input_shape) == kind
            if same and other.id != case.id and other.truth().kind == "label_permutation":
                return (other,)
        return ()

    def run(self, case: Case, tool: Tool, *, seed: int = 0, partners: Sequence[Case] = ()) -> CellResult:
        partner = partners[0] if partners else None
        model = case.model()
        x, _ = case.inputs(n=self.n_inputs)
        x = x.to(next(model.parameters()).device)
        res = model_randomization(tool, model, x, seed=seed)  # type: ignore[arg-type]
        top, full = res.top_similarity(), res.all_similarity()
        items: dict[str, list[float]] = {}
        for metric in SIMILARITIES:
            items[f"{metric}_top"] = top[metric].tolist()
            items[f"{metric}_all"] = full[metric].tolist()
        if partner is not None:
            data = data_randomization(tool, model, partner.model(x.device), x)  # type: ignore[arg-type]
            items.update({f"{metric}_data": v.tolist() for metric, v in data.items()})
        scores = {k: float(np.mean(v)) for k, v in items.items()}
        ok = passes(items["spearman_abs_top"], self.threshold)
        scores["passes_sanity"] = float(ok)
        extras: dict[str, Any] = {
            "layers_top_down": list(reversed(res.layers)),
            "head_layers": res.head,
            "top_layers": res.top,
            "threshold": self.threshold,
            "passes_sanity": ok,
            "data_randomization_case": partner.id if partner is not None else None,
            "cascading": _curves(res.cascading),
            "independent": _curves(res.independent),
        }
        gallery = {
            "input": x[0].float().cpu().clamp(0, 1).numpy(),
            "original": _image(res.maps["original"]),
            "randomised_top": _image(res.maps["randomised_top"]),
            "randomised_all": _image(res.maps["randomised_all"]),
        }
        return CellResult(scores=scores, flaw="clean", items=items, extras=extras, gallery=gallery)

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        """Spearman-abs similarity to the original map as layers are randomised from the top down."""
        panels = {}
        for mode in ("cascading", "independent"):
            panels[f"{mode} randomisation"] = mean_curves(
                rows,
                lambda e, m=mode: (
                    (list(range(len(e[m]["spearman_abs"]["mean"]))), e[m]["spearman_abs"]["mean"])
                    if m in e and "spearman_abs" in e[m]
                    else None
                ),
            )
        if not any(panels.values()):
            return []
        return [
            (
                "Model-parameter randomisation: rank correlation of each tool's map with its original as "
                "layers are re-drawn (0 = top layer)",
                curve_panels(panels, "layers from the top", "Spearman |map|"),
            )
        ]

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        if metric != self.headline or ci.n == 0:
            return ""
        return f"passes sanity: {'yes' if ci.n_items >= 2 and ci.hi < self.threshold else 'no'}"


COLUMNS = ["tool", "control", "flaw", "metric", "mean", "lo", "hi", "n", "n_items", "n_failed", "verdict"]


def cell_groups(rows: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """case_id -> per-input values of ``metric`` (or the one per-case score when a cell kept no items)."""
    out: dict[str, list[float]] = {}
    for _, r in rows.iterrows():
        items = (r.get("items") or {}).get(metric)
        if items:
            out[str(r["case_id"])] = [float(v) for v in items]
        elif metric in (r.get("scores") or {}):
            out[str(r["case_id"])] = [float(r["scores"][metric])]
    return out


def long_table(rows: pd.DataFrame, track: str, headline: str, verdict: Any) -> pd.DataFrame:
    """tool x flaw (each kind, then "all") x metric: mean and two-stage bootstrap CI (cases, then inputs).

    Failed cells are left out and counted in n_failed. ``verdict(tool, flaw, metric, ci, rows)`` gives the
    verdict string, ``rows`` being the ok cells of that flaw group. The headline metric comes first.
    """
    if "track" in rows.columns:
        rows = rows[rows["track"] == track]
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    out: list[dict[str, Any]] = []
    for flaw in [*sorted({str(f) for f in rows["flaw"]}), "all"]:
        sub = rows if flaw == "all" else rows[rows["flaw"] == flaw]
        good = sub[sub["status"] == "ok"]
        for tool in sorted({str(t) for t in sub["tool"]}):
            trows = good[good["tool"] == tool]
            control = bool(sub.loc[sub["tool"] == tool, "control"].iloc[0])
            n_failed = int(((sub["tool"] == tool) & (sub["status"] == "failed")).sum())
            metrics = sorted({m for s in trows["scores"] for m in s}, key=lambda m: (m != headline, m))
            for metric in metrics:
                ci = bootstrap_ci(list(cell_groups(trows, metric).values()))
                out.append(
                    dict(
                        tool=tool, control=control, flaw=flaw, metric=metric, mean=ci.mean, lo=ci.lo,
                        hi=ci.hi, n=ci.n, n_items=ci.n_items, n_failed=n_failed,
                        verdict=verdict(tool, flaw, metric, ci, good),
                    )
                )  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS)
