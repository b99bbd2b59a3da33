"""Shadow calibration: every detector's track record measured on models like the user's.

Composes what exists: the user's factory and data are registered as a zoo architecture and dataset
(:mod:`eis.shadows.setup`), a population of N clean + N flawed shadows (:mod:`eis.shadows.recipe`) is built
by the zoo's pool (or Ray) like any suite, benched by the ``detect`` track into a results store of its own,
and turned into a calibration table that ``eis.audit`` reads like the shipped one. The table says where it
came from (``made_by.source = "shadows"``) and adds, per detector, bootstrap CIs of TPR, FPR and ROC-AUC,
the clean shadows' scores (the audit's p-value compares the user's model with them), and TPR by poisoning
strength.

Everything is cached under ``eis_home()/shadows/<key>``, where the key hashes the factory (source,
arguments, normalisation, weight signature), the data, the recipe, the detectors' settings, the bars and
eis's version: a CI that audits every checkpoint of one architecture calibrates once. A killed run
resumes: built shadows are zoo artifacts, scored cells are in the store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eis.cache import digest
from eis.errors import EisError
from eis.paths import write_text_atomic
from eis.shadows.recipe import ShadowRecipe, draw_flaw, fitting_kinds
from eis.shadows.setup import UserArch, exported, register_arch, register_data

FORMAT = 1
CURVE_BINS = 3
BAR_STEP = 0.02  # the accuracy bar is rounded down to this step: close checkpoints share one calibration
MIN_PER_GROUP = 2  # clean and flawed shadows that met their bars, at the least, for a record


@dataclasses.dataclass
class ShadowRun:
    """What a calibration built and measured; ``table`` is the calibration table the audit reads."""

    key: str
    root: Path
    table: dict[str, Any]
    cached: bool


def shadow_specs(
    recipe: ShadowRecipe,
    arch: str,
    dataset: str,
    num_classes: int,
    channels: int,
    size: int,
    min_accuracy: float,
    population: str,
) -> list[Any]:
    """The population (``population``: its hash, which names the members): pair i = one clean and one
    flawed member with the same settings, in fold a or b."""
    from eis.zoo.spec import CaseSpec

    kinds = fitting_kinds(recipe, num_classes, channels, size)
    if not kinds:
        raise EisError(
            f"none of the shadow flaw kinds {', '.join(recipe.kinds)} fits data of shape "
            f"({channels}, {size}, {size}) with {num_classes} classes"
        )
    rng = random.Random(recipe.seed)
    bars = {"clean_accuracy": round(min_accuracy, 4), "asr": recipe.asr_bar}
    train = recipe.train_settings()
    members = []
    for i in range(recipe.shadows):
        flawed = draw_flaw(kinds[i % len(kinds)], rng, recipe, num_classes, size)
        for flaw in ({"kind": "clean"}, flawed):
            if recipe.evasive:
                flaw = {**flaw, "evasive": True}
            members.append((i, flaw))
    order = list(range(len(members)))
    random.Random(recipe.seed + 1).shuffle(order)  # names say nothing of the group
    specs = []
    for j, m in enumerate(order):
        i, flaw = members[m]
        fold, other = ("a", "b") if i % 2 == 0 else ("b", "a")
        specs.append(
            CaseSpec(
                f"shadow-{population[:8]}-{j:03d}",
                dataset=dataset,
                arch=arch,
                flaw=flaw,
                seed=recipe.seed * 1000 + j,
                train=train,
                bars=bars,
                population=f"shadow-{population[:8]}-{fold}",
                role="eval",
                train_population=f"shadow-{population[:8]}-{other}",
            ).validated()
        )
    return specs


def calibrate_shadows(
    arch: UserArch,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    user_accuracy: float,
    recipe: ShadowRecipe | None = None,
    detectors: Sequence[str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    workers: int = 0,
    device: str = "cpu",
    backend: str = "local",
    address: str | None = None,
    on_build: Callable[[Any, float, bool], None] | None = None,
    console: Any = None,
    progress: bool = False,
) -> ShadowRun:
    """Train the shadows (cached), score every detector on them, and return the calibration table.

    ``train_x``/``train_y`` train the shadows; ``x``/``y`` (the user's held-out examples) measure their
    bars and are what the detectors see, as in the audit. ``user_accuracy`` is the user's model's clean
    accuracy on ``x``: a shadow must reach it minus ``recipe.tolerance``. ``settings`` override detector
    settings by name (the audit must use the same ones for the records to hold).
    """
    from eis import __version__
    from eis.paths import eis_home
    from eis.results.store import open_store
    from eis.runner import run_benchmark
    from eis.tools.base import list_tools, make_tool
    from eis.zoo.build import BarError
    from eis.zoo.pool import build_specs
    from eis.zoo.spec import ZOO_VERSION

    recipe = (recipe or ShadowRecipe()).validated()
    k = num_classes
    check_data(train_x, train_y, x, k)
    c, size = int(x.shape[1]), int(x.shape[-1])
    names = list(detectors) if detectors is not None else list_tools("detection")
    settings = settings or {}
    tools = [make_tool(n, **settings.get(n, {})) for n in names]
    arch_name = register_arch(arch)
    dataset = register_data(train_x, train_y, x, y, k)
    min_acc = max(0.0, math.floor((user_accuracy - recipe.tolerance) / BAR_STEP) * BAR_STEP)
    population = _key(  # the shadows themselves: detector settings do not retrain them
        {
            "format": FORMAT,
            "arch": arch_name,
            "dataset": dataset,
            "recipe": recipe.to_json(),
            "min_accuracy": round(min_acc, 4),
            "zoo": ZOO_VERSION,
        }
    )
    key = _key({"population": population, "tools": {t.name: t.settings() for t in tools}, "eis": __version__})
    root = eis_home() / "shadows" / key
    table_path = root / "calibration.json"
    if table_path.is_file():
        return ShadowRun(key, root, json.loads(table_path.read_text()), cached=True)
    root.mkdir(parents=True, exist_ok=True)
    specs = shadow_specs(recipe, arch_name, dataset, k, c, size, min_acc, population)
    t0 = time.perf_counter()
    with exported(arch, dataset, k):
        try:
            cases = build_specs(
                specs, workers=workers, on_progress=on_build, device=device, backend=backend, address=address
            )
            misses: list[str] = []
        except BarError as exc:
            cases, misses = exc.built, [str(m) for m in exc.misses]
        cases, stale = _meeting_bars(cases, {s.case_id: s for s in specs})
        misses += stale
        t_build = time.perf_counter() - t0
        _enough(cases, misses, recipe)
        t1 = time.perf_counter()
        with open_store(root / "results.sqlite") as store:
            # retry_failed: a cell that failed last time (a killed worker, a broken install) runs again
            run_benchmark(
                cases, tools, ["detect"], workers=max(1, workers), store=store, progress=progress,
                console=console, backend=backend, address=address, retry_failed=True,
            )  # fmt: skip
            ids = {cs.id for cs in cases}
            records = [r for r in store.records() if r.get("track") == "detect" and r.get("case_id") in ids]
        t_bench = time.perf_counter() - t1
    table = shadow_table(records, cases, key=key, suite=f"shadows:{key}")
    table["shadows"] = {
        "key": key,
        "population": population,
        "arch": arch.to_json() | {"name": arch_name},
        "dataset": dataset,
        "recipe": recipe.to_json(),
        "min_accuracy": round(min_acc, 4),
        "user_accuracy": round(user_accuracy, 4),
        "n_clean": sum(_flaw_of(cs)["kind"] == "clean" for cs in cases),
        "n_flawed": sum(_flaw_of(cs)["kind"] != "clean" for cs in cases),
        "missed": misses,
        "seconds": {"build": round(t_build, 1), "detectors": round(t_bench, 1)},
        "device": device,
        "backend": backend,
    }
    write_text_atomic(table_path, json.dumps(table, indent=1, sort_keys=True) + "\n")  # whole or not at all
    return ShadowRun(key, root, table, cached=False)


def shadow_table(
    records: list[dict[str, Any]], cases: Sequence[Any], *, key: str, suite: str
) -> dict[str, Any]:
    """The calibration table of the shadows' detect cells, with CIs, clean scores and strength curves."""
    from eis.audit.calibration import build_calibration, record_scores

    table = build_calibration(records, suites=[suite], note=f"shadow calibration {key}")
    table["made_by"]["source"] = "shadows"
    flaws = {cs.id: _flaw_of(cs) for cs in cases}
    by_tool: dict[str, list[tuple[float, bool, str]]] = {}
    for r in records:
        score = record_scores(r).get("score")
        if r.get("status") == "ok" and score is not None and math.isfinite(float(score)):
            by_tool.setdefault(str(r["tool"]), []).append(
                (float(score), str(r["flaw"]) != "clean", str(r["case_id"]))
            )
    for tool, entry in table["detectors"].items():
        rows = by_tool.get(tool, [])
        if "threshold" not in entry or not rows:
            continue
        entry.update(_cis(rows, entry["threshold"]))
        entry["clean_scores"] = sorted(s for s, troj, _ in rows if not troj)
        entry["strength_curve"] = _curve(rows, entry["threshold"], flaws)
    return table


def p_value(score: float, clean_scores: Sequence[float]) -> float:
    """Conformal p-value of ``score`` against clean shadows: (1 + #{clean >= score}) / (n + 1).

    Under exchangeability of the user's model with the clean shadows, flagging when p <= alpha raises a
    false alarm with probability at most alpha.
    """
    return (1 + sum(c >= score for c in clean_scores)) / (len(clean_scores) + 1)


def _cis(rows: list[tuple[float, bool, str]], thr: float, n_resamples: int = 1000) -> dict[str, Any]:
    from eis.stats import bootstrap_ci
    from eis.tracks.metrics.detection import detection_ci, roc_auc

    troj = [float(s >= thr) for s, t, _ in rows if t]
    clean = [float(s >= thr) for s, t, _ in rows if not t]
    out: dict[str, Any] = {}
    for name, vals in (("tpr", troj), ("fpr", clean)):
        ci = bootstrap_ci(vals, n_resamples=n_resamples, seed=0)
        out[f"{name}_ci"] = [ci.lo, ci.hi]
    auc = detection_ci(
        roc_auc, [s for s, _, _ in rows], [int(t) for _, t, _ in rows], n_resamples=n_resamples
    )
    out["auroc_ci"] = [auc.lo, auc.hi]
    return out


def _curve(rows: list[tuple[float, bool, str]], thr: float, flaws: dict[str, dict[str, Any]]) -> list[dict]:
    """TPR at the threshold by poison rate (flawed shadows in CURVE_BINS bins of equal count)."""
    pts = sorted(
        (float(flaws[cid].get("poison_rate", math.nan)), s >= thr)
        for s, t, cid in rows
        if t and cid in flaws and "poison_rate" in flaws[cid]
    )
    out = []
    for part in np.array_split(np.arange(len(pts)), min(CURVE_BINS, len(pts))) if pts else []:
        sel = [pts[i] for i in part]
        out.append(
            {
                "poison_rate": [sel[0][0], sel[-1][0]],
                "tpr": float(np.mean([f for _, f in sel])),
                "n": len(sel),
            }
        )
    return out


def _meeting_bars(cases: Sequence[Any], specs: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Cached shadows are rechecked: bars are not part of a case id, and an earlier calibration of a less
    accurate model may have built a shadow that this one's bar rejects."""
    keep, misses = [], []
    for cs in cases:
        spec, measured = specs.get(cs.id), cs.truth().measured
        low = [b for b in measured if spec is not None and b in spec.bars and measured[b] < spec.bar(b)]
        keep += [] if low else [cs]
        misses += [
            f"case {cs.name!r} (cached) misses its {b} bar: {measured[b]:.3f} < {spec.bar(b):.3f}"
            for b in low
        ]
    return keep, misses


def _flaw_of(case: Any) -> dict[str, Any]:
    return dict(case.truth().spec["flaw"])


def _enough(cases: Sequence[Any], misses: list[str], recipe: ShadowRecipe) -> None:
    """A record needs at least MIN_PER_GROUP clean and MIN_PER_GROUP flawed shadows that met their bars."""
    flawed = sum(_flaw_of(cs)["kind"] != "clean" for cs in cases)
    if min(flawed, len(cases) - flawed) < MIN_PER_GROUP:
        first = misses[0] if misses else "too few shadows"
        raise EisError(
            f"only {len(cases)} of {2 * recipe.shadows} shadows met their bars ({first}; {len(misses)} bar "
            "misses in all), too few for a record; lower the tolerance, train longer (epochs) or raise the "
            "poison rate"
        )


def check_data(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, k: int) -> None:
    """One-line errors for training data that does not fit the model or is too small for shadows."""
    if train_x.ndim != 4 or tuple(train_x.shape[1:]) != tuple(x.shape[1:]):
        raise EisError(
            f"training data must be images shaped (N, {', '.join(map(str, x.shape[1:]))}) like the examples; "
            f"got {tuple(train_x.shape)}"
        )
    if train_x.shape[-1] != train_x.shape[-2]:
        raise EisError(f"shadows need square images; got {tuple(train_x.shape[-2:])}")
    if train_y is None or train_y.shape[0] != train_x.shape[0]:
        raise EisError("training data needs one label per image (class sub-folders, or y in the file)")
    if int(train_y.min()) < 0 or int(train_y.max()) >= k:
        raise EisError(
            f"training labels span {int(train_y.min())}..{int(train_y.max())} but the model has {k} classes "
            f"(0..{k - 1})"
        )
    if train_x.shape[0] < 10 * k:
        raise EisError(
            f"training data has {train_x.shape[0]} images for {k} classes; shadows need at least {10 * k}"
        )


def _key(content: dict[str, Any]) -> str:
    """eis's content address of ``content`` (non-JSON values as their strings)."""
    return digest(json.loads(json.dumps(content, default=str)))
