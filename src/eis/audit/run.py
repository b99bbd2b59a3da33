"""``eis.audit(model, x, y, ...)``: run every applicable detector on a user's model, screen their inputs,
gather evidence, and decide a verdict from the detectors' track records.

The audit sees what an engineer has: the model, clean labelled examples, optionally inputs to screen. It
never imports tracks or truth. Learned detectors (MNTD, the weight-statistics control) were fitted on zoo
populations; they run only when a fitted state exists for a zoo architecture whose weights have exactly
this model's names and shapes (and the same input shape and class count), else they are listed as
"not applicable" with the reason.

Verdict rule (``VERDICT_RULE``): follow the single detector with the best track record, not a vote. Among
the model-level detectors that ran, take the one whose calibration entry has the highest Youden index
J = TPR - FPR at its threshold (ties: lower FPR, then more models, then a tool over a control); if its
J > 0 the verdict is that detector's flag, and the suspected target is the target it names. A vote of
all detectors would let the random control and weaker detectors add false positives that the benchmark
has already measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from eis.audit.calibration import load_calibration, table_tiers, track_record_text
from eis.audit.report import NO_EVIDENCE, SUSPICIOUS, AuditReport, DetectorResult, ScreenedInput
from eis.batching import rows_per_pass
from eis.errors import EisError, ToolRefusal
from eis.health import ModelRefused, check_model
from eis.tools.base import list_tools, make_tool
from eis.tools.detection.base import DetectionTool
from eis.usermodel import check_compatible, device_of

VERDICT_RULE = (
    "follow the detector with the best track record (highest TPR - FPR on the calibration's models: "
    "shadow models like yours when calibrated, else eis's detection populations; must be > 0); "
    "suspicious when it flags the model"
)
SCORE_LABELS = {"neural_cleanse": "anomaly index", "specificity": "specificity score"}


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    inputs: torch.Tensor | None = None,
    input_names: Sequence[str] | None = None,
    calibration: dict[str, Any] | str | None = None,
    zoo_calibration: dict[str, Any] | str | None = None,
    detectors: Sequence[str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    attribution: Sequence[str] | None = None,
    synthesis: str | None = "feature_viz",
    n_evidence: int = 6,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> AuditReport:
    """Audit ``model`` (eval mode, taking images in [0, 1]) with clean labelled examples ``x``, ``y``.

    ``inputs`` (N, C, H, W) are screened for triggers (``input_names`` label them on the page);
    ``calibration`` is a table or its path (default: the shipped one), e.g. a shadow calibration's
    (:func:`eis.shadows.calibrate_shadows`): then the verdict follows the records measured on models like
    this one, and ``zoo_calibration`` (default: the shipped table) is shown beside them; ``detectors``
    limits the detection tools (default: every registered one); ``settings`` overrides tool settings by
    tool name (the track records hold for the settings the calibration table lists, by default the
    tools' own); ``attribution`` names the attribution tools for evidence (default: the two best
    localisers among the tools that pass the sanity track); ``synthesis`` the synthesis tool for the
    suspected target (None to skip). The model is not changed.
    """
    start = time.perf_counter()
    table = calibration if isinstance(calibration, dict) else load_calibration(calibration)
    source = "shadows" if table.get("made_by", {}).get("source") == "shadows" else "zoo"
    zoo_table = None
    if source == "shadows":
        zoo_table = (
            zoo_calibration if isinstance(zoo_calibration, dict) else load_calibration(zoo_calibration)
        )
    if not isinstance(model, nn.Module):
        raise EisError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] < 4:
        raise EisError(f"x must be clean images (N, C, H, W) with N >= 4; got {getattr(x, 'shape', x)}")
    if inputs is not None and (inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(x.shape[1:])):
        raise EisError(
            f"inputs must be shaped (N, {', '.join(map(str, x.shape[1:]))}); got {tuple(inputs.shape)}"
        )
    if input_names is not None and inputs is not None and len(input_names) != inputs.shape[0]:
        raise EisError(f"input_names has {len(input_names)} names for {inputs.shape[0]} inputs")
    was_training = model.training
    _set_mode(model, False)
    dev = device_of(model)
    x, y = x.to(dev, torch.float32), y.to(dev)
    k = check_compatible(model, x, y)
    health = check_model(model, x, y, batch_size=batch_size)
    overrides = settings or {}
    names = list(detectors) if detectors is not None else list_tools("detection")
    tools = {name: make_tool(name, **overrides.get(name, {})) for name in names}  # bad names: before any work
    if inputs is not None and "strip" not in names:
        raise EisError("screening inputs needs the input-level detector 'strip' among the detectors")
    results: list[DetectorResult] = []
    strip: DetectionTool | None = None
    try:
        with _progress(progress) as bar:
            task = bar.add_task("audit: detectors", total=len(names) + 1, current="") if bar else None
            for name in names:
                tool = tools[name]
                if not isinstance(tool, DetectionTool):
                    raise EisError(f"{name!r} is a {tool.family} tool; detectors must be detection tools")
                if bar:
                    bar.update(task, description=f"audit: {name}", current=name)
                results.append(_run_detector(tool, model, x, y, k, table, zoo_table))
                if tool.input_level and name == "strip":
                    strip = tool
                if bar:
                    bar.update(task, advance=1)
            _refuse_if_unscored(results)
            trusted, verdict, target = decide(results)
            screened = (
                _screen(strip, model, inputs, input_names, x, batch_size)
                if strip and inputs is not None
                else []
            )
            if strip is not None and inputs is not None:
                sd = next(d for d in results if d.name == "strip")
                if sd.status == "ok":
                    thr = sd.details.get("entropy_threshold")
                    if thr is not None:
                        sd.details["inputs_below_threshold"] = sum(-s.score < thr for s in screened)
                        sd.details["n_screened"] = len(screened)
            if bar:
                bar.update(task, description="audit: evidence", current="attribution maps")
            evidence = _evidence(
                model, x, y, inputs, screened, results, trusted, target, table, attribution, synthesis,
                n_evidence, seed, (bar, task),
            )  # fmt: skip
            if bar:
                bar.update(task, advance=1, description="audit: evidence", current="")
    finally:
        _set_mode(model, was_training)
    notes = [f"{d.name}: {d.reason}" for d in results if d.status in ("refused", "failed")]
    notes += [
        f"{d.name} ran with settings {d.details['settings_differ']} that differ from those its track record "
        "was measured with"
        for d in results
        if d.details.get("settings_differ")
    ]
    notes += [f"evidence: {tool} failed: {msg}" for tool, msg in evidence.get("failures", {}).items()]
    if zoo_table is not None:
        notes += _disagreements(results, trusted, verdict)
    best = _best_record(results)
    if best is not None and best.name != trusted and best.status in ("failed", "refused"):
        notes.append(
            f"{best.name}, the detector with the best track record, {best.status}; the verdict follows "
            f"{trusted or 'no detector'} instead"
        )
    return AuditReport(
        verdict=verdict,
        suspected_target=target,
        verdict_rule=VERDICT_RULE,
        trusted_detector=trusted,
        detectors=results,
        inputs=screened,
        num_classes=k,
        input_shape=tuple(x.shape[1:]),
        clean_accuracy=health.accuracy,
        n_examples=health.n,
        calibration={
            **table.get("made_by", {}),
            **({"tiers": table_tiers(table)} if source == "zoo" else {}),
            "source": source,
            "note": table.get("note", ""),
            **({"shadows": table["shadows"]} if "shadows" in table else {}),
        },
        runtime_s=time.perf_counter() - start,
        evidence=evidence,
        notes=notes,
    )


def _rank(d: DetectorResult) -> tuple[float, float, int, bool]:
    tr = d.track_record
    return (tr["tpr"] - tr["fpr"], -tr["fpr"], tr["n"], not d.control)


def _best_record(results: Sequence[DetectorResult]) -> DetectorResult | None:
    """The detector with the best track record, whether or not it ran."""
    rated = [d for d in results if "tpr" in d.track_record]
    return max(rated, key=_rank) if rated else None


def decide(results: Sequence[DetectorResult]) -> tuple[str | None, str, int | None]:
    """The verdict rule: (trusted detector, verdict, suspected target)."""
    usable = [d for d in results if d.status == "ok" and d.score is not None and "tpr" in d.track_record]
    if not usable:
        return None, NO_EVIDENCE, None
    best = max(usable, key=_rank)
    if _rank(best)[0] <= 0:
        return None, NO_EVIDENCE, None
    if best.flagged:
        return best.name, SUSPICIOUS, best.target
    return best.name, NO_EVIDENCE, None


# ------------------------------------------------------------------ detectors


def _record(table: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """A detector's calibration entry with its sentence and source (``clean_scores`` stay in the table)."""
    entry = {k: v for k, v in table.get("detectors", {}).get(name, {}).items() if k != "clean_scores"}
    label = SCORE_LABELS.get(name, "score")
    entry["text"] = track_record_text(name, entry, label, source, table_tiers(table))
    entry["source"] = source
    return entry


def _run_detector(
    tool: DetectionTool,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    table: dict[str, Any],
    zoo_table: dict[str, Any] | None = None,
) -> DetectorResult:
    entry = _record(table, tool.name, "shadows" if zoo_table is not None else "zoo")
    if zoo_table is not None:
        entry["zoo"] = _record(zoo_table, tool.name, "zoo")
    res = DetectorResult(
        name=tool.name,
        status="ok",
        control=tool.control,
        input_level=not tool.model_level,
        track_record=entry,
    )
    if tool.learned:
        why = _load_fitted(tool, model, x, k)
        if why:
            res.status, res.reason = "not applicable", why
            return res
    try:
        det = tool.inspect(model, x.clone(), y.clone(), k)
    except ToolRefusal as exc:
        res.status, res.reason = "refused", str(exc)
        return res
    except Exception as exc:  # a failing tool is recorded and the audit goes on
        res.status, res.reason = (
            "failed",
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
        )
        return res
    res.details = dict(det.details)
    calibrated = entry.get("settings")
    if isinstance(calibrated, dict):
        differ = {k: v for k, v in tool.settings().items() if k in calibrated and calibrated[k] != v}
        if differ:
            res.details["settings_differ"] = differ
    res.target = det.target
    res.mask, res.pattern = det.mask, det.pattern
    if tool.model_level:
        score = float(det.score) if det.score is not None else math.nan
        if not math.isfinite(score):
            res.status, res.reason = "failed", f"its model-level score is not finite ({score})"
            return res
        res.score = score
        thr = entry.get("threshold")
        res.flagged = bool(res.score >= thr) if thr is not None else None
        clean = table.get("detectors", {}).get(tool.name, {}).get("clean_scores")
        if clean:
            from eis.shadows.calibrate import p_value

            res.p_value = p_value(score, clean)
    return res


def _disagreements(results: Sequence[DetectorResult], trusted: str | None, verdict: str) -> list[str]:
    """Where the zoo's records disagree with those measured on shadows: outside the shadow CI, or a
    verdict the zoo's records would have given otherwise."""
    notes = []
    for d in results:
        zoo, tr = d.track_record.get("zoo", {}), d.track_record
        for key in ("tpr", "fpr"):
            ci = tr.get(f"{key}_ci")
            if ci and key in zoo and not ci[0] <= zoo[key] <= ci[1]:
                notes.append(
                    f"{d.name}: eis's zoo record ({key.upper()} {zoo[key]:.2f}) lies outside the "
                    f"{key.upper()} measured on models like yours ({tr[key]:.2f}, CI [{ci[0]:.2f}, "
                    f"{ci[1]:.2f}])"
                )
    as_zoo = []
    for d in results:
        z = dataclasses.replace(d, track_record=d.track_record.get("zoo", {}))
        thr = z.track_record.get("threshold")
        z.flagged = bool(z.score >= thr) if z.score is not None and thr is not None else None
        as_zoo.append(z)
    zoo_trusted, zoo_verdict, _ = decide(as_zoo)
    if zoo_verdict != verdict:
        notes.append(
            f"with eis's zoo records instead the verdict would be {zoo_verdict!r} (following "
            f"{zoo_trusted or 'no detector'}); the shadow records are measured on models like yours"
        )
    elif zoo_trusted != trusted:
        notes.append(
            f"eis's zoo records would trust {zoo_trusted or 'no detector'} instead of "
            f"{trusted or 'no detector'} (same verdict)"
        )
    return notes


def _refuse_if_unscored(results: Sequence[DetectorResult]) -> None:
    """No verdict without a score: refuse when no model-level detector that applies produced one."""
    model_level = [d for d in results if not d.input_level and d.status != "not applicable"]
    if model_level and all(d.score is None for d in model_level):
        why = "; ".join(f"{d.name} {d.status}: {d.reason}" for d in model_level)
        raise ModelRefused(f"no verdict: no model-level detector produced a score ({why})")


def _load_fitted(tool: DetectionTool, model: nn.Module, x: torch.Tensor, k: int) -> str:
    """Load a fitted state for ``tool`` learned on a zoo population of this very architecture; return
    "" when loaded, else the reason it does not apply."""
    from safetensors.torch import load_file

    from eis.paths import eis_home
    from eis.zoo.archs import ARCHS, build_arch

    want = _signature(model)
    c, h = int(x.shape[1]), int(x.shape[-1])
    archs = [a for a in ARCHS.names() if _signature(_safe_build(build_arch, a, c, k, h)) == want]
    if not archs:
        return (
            f"learned on zoo populations ({', '.join(ARCHS.names())} architectures); this model's weights "
            "match none of them"
        )
    root = eis_home() / "detectors" / tool.name
    for meta_file in sorted(root.glob("*/meta.json")) if root.is_dir() else []:
        try:
            meta = json.loads(meta_file.read_text())
            key = meta["key"]
            if _unseeded(key.get("settings")) != _unseeded(
                json.loads(json.dumps(tool.settings(), default=str))
            ):
                continue
            ids = key.get("train") or []
            if not ids or not _case_matches(ids[0], archs, (c, h, h), k):
                continue
            tool.set_state(load_file(str(meta_file.parent / "weights.safetensors")), meta.get("notes", {}))
            return ""
        except (OSError, ValueError, KeyError, TypeError, EisError):
            continue
    return (
        f"the model matches the zoo's {archs[0]!r} architecture, but no fitted {tool.name} state for it "
        "is cached; run `eis bench detect --tracks detect` to fit one"
    )


def _unseeded(settings: Any) -> Any:
    """Settings without ``seed``: a state fitted with another seed was fitted on the same models with the
    same settings otherwise, and serves as well."""
    return {k: v for k, v in settings.items() if k != "seed"} if isinstance(settings, dict) else settings


def _case_matches(case_id: str, archs: list[str], shape: tuple[int, int, int], k: int) -> bool:
    import eis.zoo as zoo

    case = zoo.load(case_id)
    return case.arch in archs and tuple(case.input_shape) == shape and case.num_classes == k


def _safe_build(build: Any, arch: str, c: int, k: int, h: int) -> nn.Module | None:
    try:
        return build(arch, c, k, h)
    except Exception:  # an architecture that cannot take this input shape does not match
        return None


def _signature(model: nn.Module | None) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    if model is None:
        return None
    return tuple((n, tuple(t.shape)) for n, t in model.state_dict().items())


# ------------------------------------------------------------------ screening


def _screen(
    strip: DetectionTool,
    model: nn.Module,
    inputs: torch.Tensor,
    names: Sequence[str] | None,
    clean_x: torch.Tensor,
    batch_size: int,
) -> list[ScreenedInput]:
    """Rank the user's inputs by STRIP's suspicion (higher = more likely triggered)."""
    dev = device_of(model)
    xs = inputs.to(dev, torch.float32)
    batch_size = rows_per_pass(xs.shape[1:], batch_size)
    with torch.no_grad():
        preds = torch.cat(
            [model(xs[i : i + batch_size]).argmax(1) for i in range(0, xs.shape[0], batch_size)]
        )
    scores = strip.input_scores(model, xs, clean_x).float().cpu()
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    return [
        ScreenedInput(
            index=i,
            score=float(scores[i]),
            prediction=int(preds[i]),
            file=names[i] if names is not None else None,
        )
        for i in order
    ]


# ------------------------------------------------------------------ evidence


def default_attribution(table: dict[str, Any], n: int = 2) -> list[str]:
    """The ``n`` best trigger localisers among non-control tools that passed every sanity case."""
    attr = table.get("attribution", {})
    ok = [
        (t, e.get("localize_auroc", 0.0))
        for t, e in attr.items()
        if not e.get("control") and e.get("passes_sanity") == 1.0 and t in list_tools("attribution")
    ]
    ok.sort(key=lambda p: -p[1])
    return [t for t, _ in ok[:n]] or ["saliency"]


def _evidence(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    inputs: torch.Tensor | None,
    screened: list[ScreenedInput],
    results: list[DetectorResult],
    trusted: str | None,
    target: int | None,
    table: dict[str, Any],
    attribution: Sequence[str] | None,
    synthesis: str | None,
    n: int,
    seed: int,
    progress: tuple[Any, Any],
) -> dict[str, Any]:
    """Images for the page: recovered triggers, attribution maps on the most suspicious inputs and on
    clean inputs stamped with the recovered trigger, synthesis images for the suspected target."""
    out: dict[str, Any] = {"attribution_tools": [], "maps": {}, "failures": {}}
    nc = next((d for d in results if d.mask is not None and d.name == (trusted or "neural_cleanse")), None)
    nc = nc or next((d for d in results if d.mask is not None and not d.control), None)
    groups: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if inputs is not None and screened:
        idx = torch.tensor([s.index for s in screened[:n]])
        xs = inputs[idx].to(x.device, torch.float32)
        groups["most suspicious inputs"] = (
            xs,
            torch.tensor([s.prediction for s in screened[:n]], device=x.device),
        )
    if nc is not None and nc.target is not None:
        keep = (y != nc.target).nonzero().flatten()[:n]
        m, p = nc.mask.to(x.device), nc.pattern.to(x.device)
        stamped = (1 - m) * x[keep] + m * p
        groups[f"clean inputs stamped with {nc.name}'s trigger"] = (stamped, torch.full_like(keep, nc.target))
        with torch.no_grad():
            out["stamped_success"] = (
                float((model(stamped).argmax(1) == nc.target).float().mean()) if keep.numel() else None
            )
    tools = list(attribution) if attribution is not None else default_attribution(table)
    out["attribution_tools"] = tools
    for group, (xs, t) in groups.items():
        out["maps"][group] = {"inputs": xs.detach().cpu()}
        for name in tools:
            try:
                maps = make_tool(name).attribute(model, xs, t)
                out["maps"][group][name] = maps.detach().abs().sum(1).cpu()
            except EisError as exc:
                out["failures"][name] = str(exc)
            except Exception as exc:  # a failing tool is listed, the audit goes on
                out["failures"][name] = f"{type(exc).__name__}: {exc}"
    if synthesis and target is not None:
        try:
            tool = (
                make_tool(synthesis, n_images=4, seed=seed)
                if "seed" in _fields(synthesis)
                else make_tool(synthesis, n_images=4)
            )
            bar, task = progress
            if bar:
                bar.update(task, description=f"audit: {synthesis} for class {target}", current=synthesis)
            out["synthesis"] = {
                "tool": synthesis,
                "images": tool.synthesize(model, int(target), x).detach().cpu(),
            }
        except Exception as exc:  # listed on the page, the audit goes on
            out["failures"][synthesis] = f"{type(exc).__name__}: {exc}"
    return out


def _fields(name: str) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(make_tool(name))}


def _set_mode(model: nn.Module, training: bool) -> None:
    """Set train/eval mode; a ``torch.export`` program has no modes (its graph is fixed) and is left as is."""
    with contextlib.suppress(NotImplementedError):
        model.train(training)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(show: bool) -> Any:
    """A bar on a terminal, plain progress lines when stderr is redirected (CI logs), nothing when off."""
    if not show:
        return _NoBar()
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from eis.progress import progress_display

    cols = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    return progress_display(Console(stderr=True), *cols)
