"""The calibration table: each tool's measured track record on eis's own benchmark, as plain JSON.

Built from a results store by ``eis calibrate`` (:func:`build_calibration`), never read from the store at
audit time. A default table built from the built-in suites ships with the package (``calibration.json``)
and says which suites, tracks and eis version made it.

Per detector (``detect`` track, model level): the decision threshold and, on the benchmark's models, the
counts behind TPR and FPR at that threshold (a model is flagged when its score >= threshold), the ROC-AUC,
and how often a flagged trojaned model's named target was right. The threshold is the paper's where the
paper gives one (Neural Cleanse: anomaly index 2), else the 95th percentile of the clean models' scores
(a 5% false-positive rate on the benchmark). STRIP (input level) gets its mean ROC-AUC of triggered vs
clean inputs. Per attribution tool: the share of sanity-track cases it passed and its mean trigger
localisation ROC-AUC (``localize`` track).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from eis.errors import EisError
from eis.zoo.datasets import DATASETS

FORMAT = 1
PAPER_THRESHOLDS = {"neural_cleanse": 2.0}  # Wang et al. 2019 flag an anomaly index above 2
CLEAN_QUANTILE = 0.95


def default_calibration_path() -> Path:
    """The table shipped with the package."""
    return Path(str(resources.files("eis.audit") / "calibration.json"))


def load_calibration(path: str | Path | None = None) -> dict[str, Any]:
    """Read a calibration table (default: the shipped one); one-line error when it is not one."""
    p = Path(path).expanduser() if path is not None else default_calibration_path()
    try:
        table = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise EisError(f"cannot read calibration table {str(p)!r}: {exc}") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise EisError(f"{str(p)!r} is not an eis calibration table (format {FORMAT}); run `eis calibrate`")
    _check_table(table, f"calibration table {str(p)!r}")
    return table


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _list_of(test: Any) -> Any:
    return lambda v: isinstance(v, list) and all(test(x) for x in v)


def _real(v: Any) -> bool:  # NaN too: a bootstrap CI of too few models is NaN, and is shown as "–"
    return isinstance(v, int | float) and not isinstance(v, bool)


def _pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(_real, v))


def _point(v: Any) -> bool:
    return (
        isinstance(v, dict) and _pair(v.get("poison_rate")) and _finite(v.get("tpr")) and _count(v.get("n"))
    )


_OBJECT = (lambda v: isinstance(v, dict), "an object")
_NUMBER = (_finite, "a finite number")
_NUMBER_OR_NULL = (lambda v: v is None or _finite(v), "a finite number or null")
_COUNT = (_count, "a count >= 0")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_NAMES = (_list_of(lambda x: isinstance(x, str)), "a list of strings")
# what the audit, its sentences and its page read from a table: field -> (test, what is valid)
_FIELDS: dict[str, dict[str, tuple[Any, str]]] = {
    "table": {"note": (lambda v: isinstance(v, str), "a string")}
    | dict.fromkeys(("made_by", "detectors", "attribution", "shadows"), _OBJECT),
    "made_by": {"suites": _NAMES, "tracks": _NAMES, "tiers": _NAMES, "shadows": _OBJECT},
    "detector": dict.fromkeys(("threshold", "tpr", "fpr", "auroc", "input_auroc"), _NUMBER)
    | dict.fromkeys(("n", "n_trojaned", "n_clean", "tp", "fp", "n_target", "n_input_models"), _COUNT)
    | dict.fromkeys(("tpr_ci", "fpr_ci", "auroc_ci"), (_pair, "[low, high], two numbers"))
    | {
        "target_acc": _NUMBER_OR_NULL,
        "control": _BOOL,
        "clean_scores": (_list_of(_finite), "a list of finite numbers"),
        "strength_curve": (_list_of(_point), "a list of {poison_rate: [low, high], tpr, n}"),
    },
    "attribution": {"passes_sanity": _NUMBER, "localize_auroc": _NUMBER, "control": _BOOL},
    "shadows": dict.fromkeys(("arch", "recipe", "seconds"), _OBJECT)
    | dict.fromkeys(("min_accuracy", "user_accuracy"), _NUMBER_OR_NULL)
    | {"missed": (lambda v: isinstance(v, list), "a list")},
    "recipe": {"kinds": _NAMES},
}
# a detector entry with one of these needs the others too (its track-record sentence names them)
_TOGETHER = {
    "tpr": ("threshold", "fpr", "n", "n_trojaned", "n_clean", "auroc"),
    "input_auroc": ("n_input_models",),
}


def _check_table(table: dict[str, Any], where: str) -> None:
    """One-line errors for a table whose fields the audit or its page could not use."""
    _check_fields(table, "table", where, "")
    made_by = table.get("made_by", {})
    _check_fields(made_by, "made_by", where, "made_by.")
    for prefix, holder in (("", table), ("made_by.", made_by)):  # the audit's page reads either
        shadows = holder.get("shadows", {})
        _check_fields(shadows, "shadows", where, f"{prefix}shadows.")
        _check_fields(shadows.get("recipe", {}), "recipe", where, f"{prefix}shadows.recipe.")
        for key, value in shadows.get("seconds", {}).items():
            if not _NUMBER_OR_NULL[0](value):
                raise EisError(f"{where}: {prefix}shadows.seconds.{key!r} must be a finite number or null")
    for section, kind in (("detectors", "detector"), ("attribution", "attribution")):
        for name, entry in table.get(section, {}).items():
            if not isinstance(entry, dict):
                raise EisError(f"{where}: {section}.{name!r} must be an object; run `eis calibrate` again")
            _check_fields(entry, kind, where, f"{section}.{name!r}.")
            for key, needs in _TOGETHER.items():
                missing = [k for k in needs if k not in entry]
                if key in entry and missing:
                    raise EisError(
                        f"{where}: {section}.{name!r} has {key} but no {missing[0]}; run `eis calibrate`"
                    )


def _check_fields(obj: dict[str, Any], kind: str, where: str, prefix: str) -> None:
    for key, (test, what) in _FIELDS[kind].items():
        if key in obj and not test(obj[key]):
            shown = repr(obj[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise EisError(f"{where}: {prefix}{key} must be {what}, got {shown}; run `eis calibrate` again")


def build_calibration(records: list[dict[str, Any]], *, suites: list[str], note: str = "") -> dict[str, Any]:
    """The calibration table from results-store records (``Store.records()``)."""
    from eis import __version__

    detect = [r for r in records if r.get("track") == "detect" and r.get("status") == "ok"]
    if not detect:
        raise EisError(
            "the store holds no ok cells of the detect track; run `eis bench <suite> --tracks detect`"
        )
    table: dict[str, Any] = {
        "format": FORMAT,
        "made_by": {
            "eis_version": __version__,
            "suites": sorted(suites),
            "tracks": sorted({str(r.get("track")) for r in records if r.get("status") == "ok"}),
            "tiers": sorted({DATASETS.tier(str(r.get("dataset"))) for r in detect}),
            "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
        "note": note,
        "detectors": _detectors(detect),
        "attribution": _attribution(records),
    }
    return table


def save_calibration(table: dict[str, Any], path: str | Path) -> Path:
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return p


def record_scores(r: dict[str, Any]) -> dict[str, Any]:
    """A store record's scores as a dict (the store may hand them over as JSON text)."""
    s = r.get("scores") or {}
    return json.loads(s) if isinstance(s, str) else dict(s)


def _detectors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_tool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_tool[str(r["tool"])].append(r)
    out: dict[str, Any] = {}
    for tool, trs in sorted(by_tool.items()):
        entry: dict[str, Any] = {
            "control": bool(trs[0].get("control")),
            "arch": sorted({str(r.get("arch")) for r in trs}),
        }
        entry["datasets"] = sorted({str(r.get("dataset")) for r in trs})
        st = trs[0].get("settings")
        entry["settings"] = json.loads(st) if isinstance(st, str) else st
        pairs = [
            (float(s["score"]), str(r["flaw"]) != "clean", s.get("target_correct"))
            for r in trs
            if (s := record_scores(r)).get("score") is not None and math.isfinite(float(s["score"]))
        ]
        clean = [p[0] for p in pairs if not p[1]]
        troj = [p[0] for p in pairs if p[1]]
        if clean and troj:
            thr = PAPER_THRESHOLDS.get(tool, float(np.quantile(clean, CLEAN_QUANTILE)))
            tp, fp = sum(s >= thr for s in troj), sum(s >= thr for s in clean)
            hits = [float(t) for s, lab, t in pairs if lab and s >= thr and t is not None]
            entry.update(
                threshold=thr,
                threshold_rule="paper" if tool in PAPER_THRESHOLDS else "95th percentile of clean models",
                n=len(pairs),
                n_trojaned=len(troj),
                n_clean=len(clean),
                tp=int(tp),
                fp=int(fp),
                tpr=tp / len(troj),
                fpr=fp / len(clean),
                auroc=auroc(troj, clean),
                target_acc=float(np.mean(hits)) if hits else None,
                n_target=len(hits),
            )
        inp = [float(s["input_auroc"]) for r in trs if (s := record_scores(r)).get("input_auroc") is not None]
        if inp:
            entry.update(input_auroc=float(np.mean(inp)), n_input_models=len(inp))
        out[tool] = entry
    return out


def auroc(pos: list[float], neg: list[float]) -> float:
    """ROC-AUC as the Mann-Whitney probability P(pos > neg) + 0.5 P(pos == neg)."""
    p, n = np.asarray(pos, dtype=float)[:, None], np.asarray(neg, dtype=float)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def _attribution(records: list[dict[str, Any]]) -> dict[str, Any]:
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    control: dict[str, bool] = {}
    for r in records:
        if r.get("status") != "ok" or r.get("family") != "attribution":
            continue
        s, tool = record_scores(r), str(r["tool"])
        control[tool] = bool(r.get("control"))
        if r.get("track") == "sanity" and s.get("passes_sanity") is not None:
            acc[tool]["passes_sanity"].append(float(s["passes_sanity"]))
        if r.get("track") == "localize" and s.get("auroc") is not None and math.isfinite(float(s["auroc"])):
            acc[tool]["localize_auroc"].append(float(s["auroc"]))
    out = {}
    for tool, m in sorted(acc.items()):
        entry: dict[str, Any] = {"control": control[tool]}
        for k, v in m.items():
            entry[k] = float(np.mean(v))
            entry[f"n_{k}"] = len(v)
        out[tool] = entry
    return out


TIER_WORDS = {
    "toy": "toy tier: small models trained from scratch in seconds",
    "realistic": "realistic tier: 64 px photographs, ResNet-18, trojans implanted by fine-tuning",
}


def table_tiers(table: dict[str, Any]) -> list[str]:
    """The zoo tiers a table's records were measured on (a table made before tiers existed: the toy tier,
    the only one there was)."""
    return list(table.get("made_by", {}).get("tiers") or ["toy"])


def tier_phrase(tiers: list[str]) -> str:
    """Which tier(s) a zoo record comes from, in words: "toy tier: ..." or "toy and realistic tiers"."""
    if len(tiers) == 1:
        return TIER_WORDS.get(tiers[0], f"{tiers[0]} tier")
    return f"{' and '.join(tiers)} tiers"


def track_record_text(
    name: str, entry: dict[str, Any] | None, label: str, source: str = "zoo", tiers: list[str] | None = None
) -> str:
    """One sentence: what eis measured for this detector, on its own benchmark (``source="zoo"``, on the
    zoo ``tiers``) or on shadow models like the user's (``"shadows"``), with the CIs where the table has
    them."""
    if not entry or set(entry) <= {"text", "source"}:
        return "No track record in the calibration table"
    where = (
        "On shadow models like yours"
        if source == "shadows"
        else f"On eis's detection populations ({tier_phrase(tiers or ['toy'])})"
    )
    if "tpr" in entry:
        thr = entry["threshold"]
        article = "an" if label[0] in "aeiou" else "a"

        def ci(key: str) -> str:
            lo_hi = entry.get(f"{key}_ci")
            return f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""

        text = (
            f"{where} {article} {label} >= {thr:.3g} had TPR {entry['tpr']:.2f}{ci('tpr')}, "
            f"FPR {entry['fpr']:.2f}{ci('fpr')} (n = {entry['n']}: {entry['n_trojaned']} trojaned, "
            f"{entry['n_clean']} clean; ROC-AUC {entry['auroc']:.2f}{ci('auroc')})"
        )
        if entry.get("target_acc") is not None:
            text += f"; the named target was right in {entry['target_acc']:.0%} of flagged trojaned models"
        return text
    if "input_auroc" in entry:
        return (
            f"{where} it ranked triggered inputs above clean ones with mean ROC-AUC "
            f"{entry['input_auroc']:.2f} (n = {entry['n_input_models']} trojaned models)"
        )
    return "No model-level track record in the calibration table"
