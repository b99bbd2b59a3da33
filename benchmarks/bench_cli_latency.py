"""Wall time of the listing commands, each in a fresh process, against ``python -c "import eis"``.

Listing commands (``eis --help``, ``eis tools``, ``eis zoo suites``, ``eis zoo list``) should answer
within a second: they read registries and suite files, never build data or train. ``eis tools``,
``eis tracks`` and ``eis zoo suites`` answer from a listing cache (``eis.cli.listing``) once it holds
their rows. Each command runs once with ``EIS_HOME`` pointing at an empty temporary directory ("cold":
it imports every tool and fills the cache), then ``--repeats`` times more in fresh interpreters
("cached"); the script prints the cold wall time, the best cached wall time, the CPU time of that run
(steadier on a busy machine) and the cached time's ratio to the floor (``import eis``). ``import torch``
is printed for reference: the floor of every command that must import the tools or the zoo.

    .venv/bin/python benchmarks/bench_cli_latency.py              # best of 3
    .venv/bin/python benchmarks/bench_cli_latency.py --repeats 1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EIS = str(Path(sys.executable).with_name("eis"))
COMMANDS = {
    "import eis (floor)": [sys.executable, "-c", "import eis"],
    "import torch": [sys.executable, "-c", "import torch"],
    "eis --help": [EIS, "--help"],
    "eis tools": [EIS, "tools"],
    "eis tracks": [EIS, "tracks"],
    "eis zoo suites": [EIS, "zoo", "suites"],
    "eis zoo list": [EIS, "zoo", "list"],
}
TARGET_S = 1.0


def best_time(argv: list[str], repeats: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((wall, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime))
    return min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="eis-latency-")
    env = {**os.environ, "EIS_HOME": home, "COLUMNS": "200"}
    env.pop("EIS_PLUGINS", None)
    try:
        floor = None
        print(f"{'command':<22} {'cold s':>8} {'cached s':>8} {'cpu s':>8} {'x floor':>8}")
        for label, argv in COMMANDS.items():
            cold, _ = best_time(argv, 1, env)
            seconds, cpu = best_time(argv, args.repeats, env)
            floor = floor or seconds
            flag = "" if seconds <= TARGET_S or label.startswith("import") else f"  (over {TARGET_S:.0f} s)"
            row = f"{label:<22} {cold:8.2f} {seconds:8.2f} {cpu:8.2f} {seconds / floor:8.1f}{flag}"
            print(row, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
