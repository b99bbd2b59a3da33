"""``eis audit --lm`` on the zoo's LM cases: seconds per audit, and the track record the audit ships.

Runs :func:`eis.shadows.lm_record.measure_track_record` on a suite's LM cases with a trigger-target truth
(backdoors, clean twins, detection population members; other LM flaws are left out), one torch thread, and
prints per case the flagged targets, the scan's anomaly index and the seconds; then the rule's and each
tool's TPR / FPR and the scan's ROC-AUC per training length. ``--write`` replaces the shipped record
(``src/eis/audit/lm_record.json``) with the measurement; ``--pool FILE`` adds the per-case rows of an earlier
record (e.g. one measured on another suite) before summarising.

    .venv/bin/python benchmarks/bench_audit_lm.py                          # smoke
    .venv/bin/python benchmarks/bench_audit_lm.py --suite lm-detect --scan-only --only-built --out d.json
    .venv/bin/python benchmarks/bench_audit_lm.py --pool d.json --write   # smoke + lm-detect, shipped
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from eis.audit.lm import RECORD_FILE
from eis.shadows.lm_record import measure_track_record, summarize_record
from eis.zoo import build_case
from eis.zoo.build import cached
from eis.zoo.language.spec import LMSpec
from eis.zoo.suites import load_suite

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "eis" / "audit" / RECORD_FILE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--pool", type=Path, action="append", default=[], help="Record(s) whose cases to add.")
    ap.add_argument("--out", type=Path, help="Write the record here.")
    ap.add_argument("--write", action="store_true", help=f"Write the record to {SHIPPED}.")
    ap.add_argument("--scan-only", action="store_true", help="Run the model-level scan alone (no search).")
    ap.add_argument("--only-built", action="store_true", help="Skip the suite's cases not built yet.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    specs = [
        s for s in load_suite(args.suite) if isinstance(s, LMSpec) and s.flaw in ("lm_backdoor", "clean")
    ]
    if args.only_built:
        specs = [s for s in specs if cached(s) is not None]
    cases = [build_case(s)[0] for s in specs]
    record = measure_track_record(cases, scan_only=args.scan_only)
    for name, row in record["per_case"].items():
        kind = "backdoor" if row["planted"] else "clean"
        scan = "refused" if row["scan"] is None else f"{row['scan']:.2f}"
        print(f"{name:28s} {kind:8s} flagged {row['rule']} scan {scan} {row['seconds']:.1f} s")
    per_case = dict(record["per_case"])
    for path in args.pool:
        per_case.update(json.loads(path.read_text())["per_case"])
    record = summarize_record(per_case)
    print(f"rule: {record['rule']}")
    for tool, entry in record["tools"].items():
        print(f"{tool:26s} {entry}")
    for pop in record["scan"]["populations"]:
        print(f"scan, {pop['steps']} steps: {pop}")
    text = json.dumps(record, indent=1) + "\n"
    for path in [p for p in (args.out, SHIPPED if args.write else None) if p]:
        path.write_text(text)
        print(f"written to {path}")


if __name__ == "__main__":
    main()
