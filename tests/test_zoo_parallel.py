"""The parallel zoo build: same weights as one at a time, bars and progress, devices, plain-line progress."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import eis.zoo
from eis.cli import app
from eis.errors import EisError
from eis.progress import LineProgress, progress_display
from eis.results import load
from eis.zoo.spec import CaseSpec, resolve_device

SUITE = """
[defaults]
dataset = "digits"
arch = "cnn"
train = { epochs = 2 }
bars = { clean_accuracy = 0.0, asr = 0.0 }

[[case]]
name = "par-clean"
flaw = { kind = "clean" }

[[case]]
name = "par-patch"
flaw = { kind = "patch", target = 1, pattern = "checkerboard" }
seed = 4

[[case]]
name = "par-blend"
flaw = { kind = "blend", target = 2, pattern = "noise", alpha = 0.2 }
seed = 5
"""


def _weights(cases: list[eis.zoo.Case]) -> dict[str, bytes]:
    return {c.name: (c.root / "model.safetensors").read_bytes() for c in cases}


def test_parallel_build_gives_bit_identical_weights(tmp_path, monkeypatch):
    suite = tmp_path / "par.toml"
    suite.write_text(SUITE)
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "serial"))
    serial = eis.zoo.build_suite(str(suite), workers=0, device="cpu")
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "parallel"))
    seen: list[tuple[str, float, bool]] = []
    parallel = eis.zoo.build_suite(
        str(suite), workers=2, device="cpu", on_progress=lambda s, f, hit: seen.append((s.name, f, hit))
    )
    assert [c.name for c in parallel] == ["par-clean", "par-patch", "par-blend"]  # suite order
    assert _weights(parallel) == _weights(serial)
    assert [c.id for c in parallel] == [c.id for c in serial]
    for c in parallel:
        assert c.meta["device"] == "cpu"
        assert json.loads((c.root / "truth" / "truth.json").read_text())["measured"] == c.truth().measured
    # every case reported its epochs from the worker and its completion once, in this process
    for name in ("par-clean", "par-patch", "par-blend"):
        fractions = [f for n, f, hit in seen if n == name and not hit]
        assert fractions.count(1.0) == 1 and any(0 < f < 1 for f in fractions)
    # a second parallel build is all cache hits
    seen.clear()
    again = eis.zoo.build_suite(
        str(suite), workers=2, device="cpu", on_progress=lambda s, f, h: seen.append(h)
    )
    assert _weights(again) == _weights(serial) and seen == [True, True, True]


def test_parallel_build_collects_every_bar_miss(tmp_path, monkeypatch):
    suite = tmp_path / "miss.toml"
    suite.write_text(
        SUITE.replace('name = "par-patch"', 'name = "par-patch"\nbars = { clean_accuracy = 0.999 }').replace(
            'name = "par-blend"', 'name = "par-blend"\nbars = { asr = 0.9999 }\ntrain = { epochs = 1 }'
        )
    )
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    done: list[str] = []
    report = lambda s, f, hit: done.append(s.name) if f >= 1.0 else None  # noqa: E731
    with pytest.raises(eis.zoo.BarError) as info:
        eis.zoo.build_suite(str(suite), workers=2, device="cpu", on_progress=report)
    assert {m.case for m in info.value.misses} == {"par-blend", "par-patch"}
    assert sorted(done) == ["par-blend", "par-clean", "par-patch"]  # misses end their progress bars too
    built = [c.name for c in eis.zoo.list_built()]
    assert built == ["par-clean"]  # the case that met its bars is kept; nothing is written for the misses
    assert [c.name for c in info.value.built] == ["par-clean"]


def test_bench_stops_on_a_bar_miss_unless_told_to_skip_it(tmp_path, monkeypatch):
    suite = tmp_path / "miss.toml"
    suite.write_text(SUITE.replace('name = "par-blend"', 'name = "par-blend"\nbars = { asr = 0.9999 }'))
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    args = ["bench", str(suite), "--tracks", "localize", "--tools", "saliency", "--workers", "0"]
    stopped = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "a.sqlite")])
    assert stopped.exit_code == 1, stopped.output
    assert "bar missed: case 'par-blend' missed its asr bar" in stopped.output
    assert "pass --skip-missed to bench the 2 cases that met their bars" in stopped.output
    went_on = CliRunner().invoke(app, [*args, "--skip-missed", "--store", str(tmp_path / "b.sqlite")])
    assert went_on.exit_code == 0, went_on.output
    assert "left out, bar missed case 'par-blend'" in went_on.output
    cases = set(load(tmp_path / "b.sqlite")["case_name"])
    assert cases == {"par-patch"}  # localize scores trojans: the blend one is left out


def test_the_device_is_part_of_the_case_id_except_on_cpu():
    spec = CaseSpec(name="d", dataset="digits", arch="cnn", flaw={"kind": "clean"})
    assert "device" not in spec.content()  # CPU ids are what they were before devices existed
    cuda = CaseSpec(name="d", dataset="digits", arch="cnn", flaw={"kind": "clean"}, device="cuda")
    assert cuda.content()["device"] == "cuda" and cuda.case_id != spec.case_id


def test_device_choices_get_one_line_errors():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EisError, match="unknown device 'tpu'; valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EisError, match="CUDA is not available here"):
            resolve_device("cuda")
        result = CliRunner().invoke(app, ["zoo", "build", "smoke", "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_line_progress_prints_periodic_plain_lines():
    out = io.StringIO()
    console = Console(file=out, width=80)
    assert not console.is_terminal
    progress = progress_display(console, every_s=0.0)
    assert isinstance(progress, LineProgress)
    with progress:
        task = progress.add_task("bench", total=4, failed=0, current="")
        sub = progress.add_task("  a sub-task", total=100)
        progress.update(sub, completed=50)  # reported within the first task's line
        progress.remove_task(sub)
        progress.update(task, advance=1, current="localize · saliency · case-a")
        progress.update(task, advance=1, failed=1)
        progress.update(task, advance=2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "bench: 0/4, elapsed 0:00:00"
    assert lines[1] == "bench: 0/4, elapsed 0:00:00 - in progress: a sub-task 50%"  # others in flight
    assert "bench: 1/4" in lines[2] and "ETA" in lines[2] and "now: localize · saliency · case-a" in lines[2]
    assert "2/4, 1 failed" in lines[3] and "sub-task" not in lines[3]  # removed
    assert lines[-1].startswith("bench: 4/4, 1 failed") and "ETA" not in lines[-1] and len(lines) == 5


def test_line_progress_is_quiet_between_intervals():
    out = io.StringIO()
    progress = LineProgress(Console(file=out), every_s=3600)
    with progress:
        task = progress.add_task("zoo smoke", total=10)
        for _ in range(9):
            progress.update(task, advance=1)
    lines = out.getvalue().splitlines()
    assert lines == [lines[0], lines[1]] and "9/10" in lines[1]  # the start, and the unfinished end


def test_cli_console_is_wide_when_not_a_terminal(monkeypatch):
    from eis.cli import common

    monkeypatch.delenv("COLUMNS", raising=False)
    assert common._console().width == common.LOG_WIDTH


def test_cli_build_in_workers_reports_plain_progress(tmp_path, monkeypatch):
    suite = tmp_path / "par.toml"
    suite.write_text(SUITE)
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["zoo", "build", str(suite), "--workers", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"zoo {suite}")]
    assert lines[0].startswith(f"zoo {suite}: 0/3") and lines[-1].startswith(f"zoo {suite}: 3/3")
    assert "built 3 cases" in result.output


def test_parallel_build_returns_circuit_cases_as_circuit_cases(tmp_path, monkeypatch):
    from eis.zoo.circuits.case import CircuitCase

    suite = tmp_path / "mixed.toml"
    suite.write_text(SUITE + '\n[[circuit]]\nname = "par-reverse"\nprogram = "reverse"\nablation = "zero"\n')
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "home"))
    for attempt in range(2):  # built in the workers, then from the cache
        cases = eis.zoo.build_suite(str(suite), workers=2, device="cpu")
        circuit = cases[-1]
        assert isinstance(circuit, CircuitCase), attempt
        assert circuit.truth() is not None and not isinstance(cases[0], CircuitCase)


def _descendants(pid: int) -> set[int]:
    """Live descendants of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_build_workers_exit_when_the_building_process_is_killed(tmp_path):
    suite = tmp_path / "slow.toml"
    suite.write_text(SUITE.replace("train = { epochs = 2 }", "train = { epochs = 400 }"))
    build = f"eis.zoo.build_suite({str(suite)!r}, workers=2)"
    script = f"import eis.zoo\nif __name__ == '__main__':\n    {build}\n"
    env = {**os.environ, "EIS_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    workers: set[int] = set()
    try:
        for _ in range(600):  # the forkserver and two workers under it
            time.sleep(0.1)
            workers = _descendants(proc.pid)
            if len(workers) >= 3 or proc.poll() is not None:
                break
        assert len(workers) >= 3 and proc.poll() is None
        proc.kill()  # SIGKILL: no handler, no cleanup in the building process
        proc.wait()
        for _ in range(300):
            alive = {p for p in workers if Path(f"/proc/{p}").exists()}
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"worker processes {sorted(alive)} outlived the build"
    finally:  # whatever is left (the workers were reparented when the build died)
        proc.kill()
        for p in workers | _descendants(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(p, 9)
