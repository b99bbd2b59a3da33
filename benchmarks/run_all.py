"""Run every benchmark in turn (``make bench``); each prints its own ratios. Not part of the tests.

.venv/bin/python benchmarks/run_all.py            # all
.venv/bin/python benchmarks/run_all.py zoo nc     # a subset by short name
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "zoo": ["bench_zoo.py", "smoke", "detect"],
    "attribution": ["bench_attribution.py", "--quick"],
    "faithfulness": ["bench_faithfulness.py"],
    "nc": ["bench_neural_cleanse.py"],
    "synthesis": ["bench_synthesis.py"],
    "population": ["bench_population_training.py"],
    "circuits": ["bench_circuits.py"],
    "repair": ["bench_repair.py"],
    "rules": ["bench_rule_search.py"],
    "features": ["bench_features.py"],
    "realistic": ["bench_realistic.py"],
    "lm_detect": ["bench_lm_detect.py"],
    "bootstrap_auroc": ["bench_bootstrap_auroc.py"],
}


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; valid: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        script, *args = BENCHMARKS[name]
        print(f"== {name}: {script} {' '.join(args)}", flush=True)
        status |= subprocess.call([sys.executable, str(HERE / script), *args])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
