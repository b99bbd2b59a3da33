"""Usage errors from the ``eis`` entry point (unknown option, missing argument, bad value): one stderr
line naming the command and what was wrong, exit 2, no box and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    (["audit", "model.safetensors", "--bogus"], "eis audit: No such option: --bogus"),
    (["zoo", "show"], "eis zoo show: Missing argument 'case'"),
    (["audit", "model.safetensors"], "eis audit: Missing option '--data'"),
    (["bench", "smoke", "--workers", "many"], "eis bench: Invalid value for '--workers'"),
]


@pytest.mark.parametrize(("args", "start"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_usage_errors_are_one_line_exit_2(args: list[str], start: str, tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from eis.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), out.stderr
    assert "--help" in lines[0] and out.stdout == ""


def test_the_console_script_is_the_wrapper() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "eis"]
    assert ep.value == "eis.cli:main"
