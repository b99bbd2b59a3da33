"""The ``repair`` track: can a method remove the planted flaw with a small clean budget, and at what cost?

Scored the way BackdoorBench scores defences (``eis.tracks.metrics.repair``): clean accuracy (C-ACC),
attack success rate (ASR) and robust accuracy (RA) before and after, and the defense effectiveness rating
(DER, the headline). Each trojaned or cue-reliant standalone case (patch, blend, natural, warp, spurious)
and each clean one (where the only question is what the method costs) is one cell per method.

What a method sees: the model and a clean data budget, a seeded ``budget`` share (default 5%, BackdoorBench's
default) of the training set's clean images with their labels, drawn with the cell's seed so that every
method on a case gets the same images; and, for methods that name a detector (Neural Cleanse for unlearning
and attribution-guided pruning), that detector's output on the same model and budget, computed once per
case and cached under ``EIS_HOME/repair/detections``. Never the truth: the track stamps the true trigger
only to measure ASR and RA afterwards, on the held-out test split.

A method that needs a flagged trigger when the detector flagged none is "not applicable" on that case: the
cell is recorded as done (not failed) with ``applied = 0`` and the model's unchanged scores, which is what
the defence does in practice (BackdoorBench's Neural Cleanse returns the model unchanged too); ``summarize``
counts those cases next to the method's verdict.

``summarize`` gives per method and flaw kind ("all" pools the trojaned cases) the means with bootstrap CIs
(``eis.stats``: two-stage over cases and inputs for C-ACC, ASR, RA; over cases for DER and the drops) and,
for each non-control method, whether its DER beats clean fine-tuning's on the same cases beyond the noise
(paired bootstrap over cases). On clean cases the row to read is ``acc_drop``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from eis.cache import cached_state, digest
from eis.errors import EisError
from eis.stats import CI, bootstrap_ci, ci_columns, paired_bootstrap_ci, verdict
from eis.tools.detection.base import Detection, DetectionTool
from eis.tools.repair.base import NotApplicable, RepairTool
from eis.tracks.base import CellResult, Track, fill_flaw, jsonable, register_track, standalone, stored_dict
from eis.tracks.metrics.repair import der, outcomes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from eis.tools.base import Tool
    from eis.zoo.case import Case

TRIGGERED_KINDS = ("patch", "blend", "natural", "warp", "spurious", "style")
BASELINE = "finetune"  # a method only works where it beats clean fine-tuning
ITEM_METRICS = ("c_acc", "asr", "ra")
CASE_METRICS = ("der", "acc_drop", "asr_drop", "applied")
COLUMNS = [
    "tool", "control", "flaw", "metric", "mean", "lo", "hi", "n", "n_items", "n_failed", "n_na",
    "best_control", "margin", "margin_lo", "margin_hi", "verdict",
]  # fmt: skip


def budget_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A seeded ``fraction`` of ``range(n)`` (sorted); a budget of zero inputs is a one-line error."""
    if not 0 < fraction <= 1:
        raise EisError(f"repair: the data budget must be a fraction in (0, 1]; got {fraction}")
    k = round(fraction * n)
    if k < 1:
        raise EisError(
            f"repair: a budget of {fraction:g} of {n} training inputs is 0 inputs; raise the budget"
        )
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


@register_track
class RepairTrack(Track):
    """Score repair methods by C-ACC, ASR, RA and DER before/after, on trojaned and clean cases.

    Settings: ``budget`` (share of the training set given to the method), ``n_resamples`` for the CIs and
    ``batch_size`` for evaluation.
    """

    name: ClassVar[str] = "repair"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "repair"
    headline: ClassVar[str] = "der"
    higher_is_better: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Remove the trojan with a 5% clean budget: C-ACC, ASR, RA, DER before -> after (BackdoorBench)"
    )

    def __init__(self, budget: float = 0.05, n_resamples: int = 1000, batch_size: int = 256) -> None:
        if not 0 < budget <= 1:
            raise EisError(f"repair: budget must be a fraction in (0, 1]; got {budget}")
        self.budget, self.n_resamples, self.batch_size = budget, n_resamples, batch_size

    def applies_to(self, case: Case) -> bool:
        return standalone(case) and case.truth().kind in ("clean", *TRIGGERED_KINDS)

    # ------------------------------------------------------------------ run

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, RepairTool):
            raise EisError(
                f"repair runs repair methods; {tool.name!r} is a {tool.family or 'non-repair'} tool"
            )
        truth = case.truth()
        if truth.kind not in ("clean", *TRIGGERED_KINDS):
            raise EisError(f"repair needs a clean or triggered case; {case.name!r} is {truth.kind!r}")
        tool = _seeded(tool, seed)
        model = case.model()
        xb, yb, idx = self.budget_data(case, seed)
        extras: dict[str, Any] = {"budget": self.budget, "n_budget": int(xb.shape[0])}
        gallery: dict[str, np.ndarray] = {}
        detection = None
        detector = tool.detector_tool()
        if detector is not None:
            t0 = time.perf_counter()
            detection = cached_detection(case.id, detector, model, xb, yb, case.num_classes, idx)
            extras["detect_s"] = time.perf_counter() - t0
            extras["detection"] = {"score": detection.score, "target": detection.target}
            if detection.mask is not None:  # the recovered trigger's size, for the patch-vs-blend question
                extras["detection"]["mask_l1"] = float(detection.mask.abs().sum())
            if detection.mask is not None and detection.pattern is not None:
                gallery["recovered_mask"] = detection.mask.float().clamp(0, 1).numpy()
                gallery["recovered_pattern"] = detection.pattern.float().clamp(0, 1).numpy()

        test_x, test_y = case.inputs(split="test")
        clean_x = truth.flaw.in_distribution(test_x, test_y, torch.Generator().manual_seed(seed))
        trig_x = trig_y = None
        if truth.kind != "clean":
            elig = torch.as_tensor(truth.eligible(test_y), dtype=torch.bool).cpu()
            trig_x, _ = truth.apply(test_x[elig.to(test_x.device)], seed=seed)
            trig_y = test_y[elig.to(test_y.device)]
        before = outcomes(model, clean_x, test_y, trig_x, trig_y, truth.target, self.batch_size)

        t0 = time.perf_counter()
        try:
            repaired = tool.repair(model, xb, yb, case.num_classes, detection=detection)
            after_model, applied = repaired.model, True
            extras["details"] = jsonable(repaired.details)
        except NotApplicable as exc:
            after_model, applied = model, False
            extras["not_applicable"] = str(exc)
        extras["repair_s"] = time.perf_counter() - t0
        extras["applied"] = applied
        _check_same_architecture(model, after_model, tool.name)
        after = outcomes(after_model, clean_x, test_y, trig_x, trig_y, truth.target, self.batch_size)

        scores = {"applied": float(applied)}
        for m in ITEM_METRICS:
            if m in after:
                scores[m] = float(after[m].mean())
                scores[f"{m}_before"] = float(before[m].mean())
        scores["acc_drop"] = scores["c_acc_before"] - scores["c_acc"]
        if "asr" in after:
            scores["asr_drop"] = scores["asr_before"] - scores["asr"]
            scores["der"] = der(scores["asr_before"], scores["asr"], scores["c_acc_before"], scores["c_acc"])
        items = {m: [float(v) for v in after[m]] for m in ITEM_METRICS if m in after}
        return CellResult(scores=scores, flaw=truth.kind, items=items, extras=extras, gallery=gallery)

    def budget_data(self, case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clean budget: a seeded ``budget`` share of the case's training images, with their labels."""
        x, y = case.inputs(split="train")
        idx = budget_indices(x.shape[0], self.budget, seed)
        return x[idx.to(x.device)], y[idx.to(y.device)], idx

    # ------------------------------------------------------------ summarize

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Long table per method x flaw kind ("all": the trojaned cases pooled) x metric (see the module)."""
        import pandas as pd

        if "track" in rows.columns:
            rows = rows[rows["track"] == self.name]
        if rows.empty:
            return pd.DataFrame(columns=COLUMNS)
        rows = fill_flaw(rows)
        tools = sorted(str(t) for t in rows["tool"].unique())
        control = {t: bool(rows.loc[rows["tool"] == t, "control"].iloc[0]) for t in tools}
        cells = {t: _ok_cells(rows[rows["tool"] == t]) for t in tools}
        boot = {"n_resamples": self.n_resamples, "seed": 0}
        kinds = sorted(str(f) for f in rows["flaw"].unique() if str(f))
        out: list[dict[str, Any]] = []
        for flaw in [*[k for k in kinds if k != "clean"], "all", *(["clean"] if "clean" in kinds else [])]:
            for t in tools:
                sub = rows[(rows["tool"] == t) & _in_group(rows["flaw"], flaw)]
                group = {
                    c: v
                    for c, v in cells[t].items()
                    if v["flaw"] == flaw or (flaw == "all" and v["trojaned"])
                }
                if sub.empty:
                    continue
                n_failed = int((sub["status"] == "failed").sum())
                n_na = sum(1 for v in group.values() if not v["scores"].get("applied", 1.0))
                base = {
                    "tool": t, "control": control[t], "flaw": flaw, "n_failed": n_failed, "n_na": n_na,
                    "best_control": BASELINE if BASELINE in cells else "",
                }  # fmt: skip
                for m in (*CASE_METRICS, *ITEM_METRICS):
                    vals = [v for v in group.values() if m in v["scores"]]
                    if not vals:
                        continue
                    if m in ITEM_METRICS:
                        ci = bootstrap_ci([v["items"][m] for v in vals if m in v["items"]], **boot)
                    else:
                        ci = bootstrap_ci([v["scores"][m] for v in vals], **boot)
                    margin = None
                    text = ""
                    if m == self.headline:
                        if control[t]:
                            text = "control"
                        elif BASELINE in cells:
                            margin = _paired(group, cells[BASELINE], m, boot)
                            text = _verdict(margin, n_na, len(group))
                        else:
                            text = f"beats {BASELINE}: n/a ({BASELINE} not run)"
                    out.append({**base, **ci_columns(ci, margin), "metric": m, "verdict": text})
        return pd.DataFrame(out, columns=COLUMNS)

    # -------------------------------------------------------------- figures

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        """C-ACC vs ASR per method: one arrow per trojaned case from before to after repair."""
        from eis.tracks.repair_figures import before_after_scatter

        fig = before_after_scatter(rows)
        if fig is None:
            return []
        return [("C-ACC vs ASR before -> after repair, one arrow per trojaned case (BackdoorBench)", fig)]


# ---------------------------------------------------------------- helpers


def cached_detection(
    case_id: str,
    detector: DetectionTool,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    idx: torch.Tensor,
) -> Detection:
    """``detector.inspect`` on the budget, computed once per (case, detector settings, budget) and cached."""
    key = {
        "case": case_id,
        "detector": detector.name,
        "settings": detector.settings(),
        "budget": digest([int(i) for i in idx]),
        "v": RepairTrack.version,
    }

    def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        det = detector.inspect(model, x.clone(), y.clone(), num_classes)
        tensors = {}
        if det.mask is not None and det.pattern is not None:
            tensors = {"mask": det.mask.float(), "pattern": det.pattern.float()}
        return tensors, {"score": det.score, "target": det.target, "details": jsonable(det.details)}

    tensors, notes, _ = cached_state("repair/detections", key, compute)
    score = notes.get("score")
    return Detection(
        score=float("nan") if score is None else float(score),
        target=notes.get("target"),
        mask=tensors.get("mask"),
        pattern=tensors.get("pattern"),
        details=notes.get("details", {}),
    )


def _seeded(tool: RepairTool, seed: int) -> RepairTool:
    """A fresh copy of the method, its seed offset by the cell's seed (shared by every method on a case)."""
    fields = {f.name for f in dataclasses.fields(tool)}
    if "seed" in fields and seed:
        return dataclasses.replace(tool, seed=tool.seed + seed)
    return dataclasses.replace(tool)


def _check_same_architecture(before: torch.nn.Module, after: torch.nn.Module, name: str) -> None:
    a, b = before.state_dict(), after.state_dict()
    same = a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    if type(before) is not type(after) or not same:
        raise EisError(f"repair method {name!r} returned a model of another architecture")
    if not all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point()):
        raise EisError(f"repair method {name!r} returned non-finite weights")


def _in_group(flaws: pd.Series, flaw: str) -> pd.Series:
    return (flaws != "clean") & (flaws != "") if flaw == "all" else flaws == flaw


def _ok_cells(tool_rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """case_id -> flaw, scores and items of the method's successful cells."""
    out = {}
    for _, r in tool_rows[tool_rows["status"] == "ok"].iterrows():
        flaw = str(r["flaw"])
        out[str(r["case_id"])] = {
            "flaw": flaw,
            "trojaned": flaw not in ("clean", ""),
            "scores": stored_dict(r["scores"]),
            "items": stored_dict(r["items"]),
        }
    return out


def _paired(group: dict[str, dict], baseline: dict[str, dict], metric: str, boot: dict[str, int]) -> CI:
    """Paired CI of (method - baseline) over the cases both scored."""
    shared = sorted(c for c in set(group) & set(baseline) if metric in baseline[c]["scores"])
    a = [group[c]["scores"][metric] for c in shared if metric in group[c]["scores"]]
    b = [baseline[c]["scores"][metric] for c in shared if metric in group[c]["scores"]]
    return paired_bootstrap_ci(a, b, **boot)


def _verdict(margin: CI, n_na: int, n: int) -> str:
    text = f"beats {BASELINE}: {verdict(margin)}"
    if margin.n:
        text += f" (der {margin.mean:+.3f} [{margin.lo:+.3f}, {margin.hi:+.3f}], {margin.n} cases)"
    if n_na:
        text += f"; not applicable on {n_na} of {n} cases (detector flagged nothing)"
    return text
