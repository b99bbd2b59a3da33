"""The LM audit's track record, measured on the zoo's LM cases (``eis/audit/lm_record.json``).

It sits above the audit, like the commands that build shadow populations: it opens built cases and their
sealed truth (the planted pairs, or a clean model's probe pairs, as targets) and runs
:func:`eis.audit.lm.audit_lm` on each, which itself never sees truth. ``benchmarks/bench_audit_lm.py`` runs
it and writes the shipped record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from eis.audit.lm import REASR_THRESHOLD, SCAN_TOOL, audit_lm, scan_lm


def measure_track_record(cases: Sequence[Any], *, scan_only: bool = False, **kwargs: Any) -> dict[str, Any]:
    """The audit run on built LM cases (their truth's pairs as targets, 100 held-out texts as texts): the
    rule's and each tool's TPR on planted targets and FPR on clean models' probe targets (the pairs a clean
    twin or clean population member drew but was never trained on), and the scan's ROC-AUC over models,
    per training length. ``scan_only`` runs the scan alone (no trigger search: the rule's rows stay empty).
    ``per_case`` keeps what each case gave, so a record can be checked and pooled."""
    per_case = {}
    for case in cases:
        truth = case.truth()
        targets = [" ".join(p["target"]) for p in truth.pairs]
        began = time.perf_counter()
        row: dict[str, Any] = {"planted": truth.planted, "steps": int(truth.spec.get("steps", 0))}
        if scan_only:
            model = case.model()
            scan = scan_lm(model, case.tokenizer(), case.texts(100), targets)
            row.update(rule=[], tools={}, scan=scan.get("score"))
        else:
            rep = audit_lm(case.model(), case.tokenizer(), targets, case.texts(100), progress=False, **kwargs)
            tools = rep.targets[0]["tools"] if rep.targets else {}
            row["rule"] = [t["flagged"] for t in rep.targets]
            row["tools"] = {
                name: [t["tools"][name]["status"] == "ok" and t["tools"][name]["reasr"] >= REASR_THRESHOLD
                       for t in rep.targets]
                for name in tools
            }  # fmt: skip
            row["scan"] = next(d for d in rep.detectors if d["name"] == SCAN_TOOL)["score"]
        row["seconds"] = round(time.perf_counter() - began, 1)
        per_case[case.name] = row
    return summarize_record(per_case)


def summarize_record(per_case: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pool :func:`measure_track_record`'s per-case rows into rates (TPR, FPR) and the scan's ROC-AUC with
    a stratified bootstrap 95% CI per training length."""
    from eis.tracks.metrics.detection import detection_ci, roc_auc

    def rate(key: str, planted: bool, tool: str | None = None) -> tuple[float | None, int]:
        hits = [h for c in per_case.values() if c["planted"] == planted
                for h in (c["tools"].get(tool, []) if tool else c["rule"])]  # fmt: skip
        return (sum(hits) / len(hits) if hits else None), len(hits)

    def entry(tool: str | None = None) -> dict[str, Any]:
        (tpr, n_p), (fpr, n_n) = rate("tpr", True, tool), rate("fpr", False, tool)
        return {"tpr": tpr, "fpr": fpr, "n_planted": n_p, "n_probe": n_n}

    tools = sorted({t for c in per_case.values() for t in c["tools"]})
    populations = []
    for steps in sorted({c["steps"] for c in per_case.values()}):
        rows = [c for c in per_case.values() if c["steps"] == steps and c["scan"] is not None]
        labels = [int(c["planted"]) for c in rows]
        if 0 < sum(labels) < len(labels):
            scores = [c["scan"] for c in rows]
            ci = detection_ci(roc_auc, scores, labels)
            populations.append(
                {"steps": steps, "n_clean": labels.count(0), "n_backdoored": sum(labels),
                 "auroc": round(roc_auc(scores, labels), 4), "lo": round(ci.lo, 4), "hi": round(ci.hi, 4)}
            )  # fmt: skip
    return {
        "cases": sorted(per_case),
        "n_cases": len(per_case),
        "n_audited": sum(bool(c["rule"]) for c in per_case.values()),  # the rest ran the scan alone
        "rule": entry(),
        "tools": {t: entry(t) for t in tools},
        "scan": {"tool": SCAN_TOOL, "populations": populations},
        "per_case": per_case,
    }
