"""Start ``eis`` commands as real processes and SIGKILL them at chosen moments (tests/test_killed_runs.py).

Importing torch and eis takes a few seconds per process, which would dominate a test that starts twenty of
them. So a *zygote* process imports them once and forks one child per command: each child is a real,
separate process running the real command line (its own session, environment, working folder and output
file), killed with SIGKILL like any other; only the imports are shared. Every command runs with
``--workers 0`` (no process pools), so killing the child's process group kills all of its work.

The zygote takes JSON requests on stdin and answers each with one JSON line:
``{"op": "run", "argv": [...], "env": {...}, "cwd": ..., "log": ...}`` -> ``{"pid": N}`` (with ``"code"``
instead of ``"argv"``: the child runs that Python code);
``{"op": "wait", "pid": N, "timeout": S}`` -> ``{"status": exit code, or -signal, or null if still running}``;
``{"op": "kill", "pid": N}`` -> ``{"status": ...}`` (SIGKILL to the child's process group, then reaped).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def _child(req: dict[str, Any]) -> None:
    """In the forked child: become the command and never return."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        from eis.cli import app

        try:
            if "code" in req:
                exec(req["code"], {"__name__": "__main__"})
            else:
                app(req["argv"], prog_name="eis")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The zygote's loop (run as ``python -c "import kill_harness; kill_harness.serve()"``)."""
    import torch

    torch.set_num_threads(1)
    import eis.cli  # noqa: F401  (everything a command needs at start, imported once)
    import eis.cli.audit  # noqa: F401
    import eis.cli.repair  # noqa: F401

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # children start from a quiet fd 1 until they redirect it
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "run":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                out.close()
                _child(req)
            reply: dict[str, Any] = {"pid": pid}
        elif req["op"] == "wait":
            deadline = time.monotonic() + req["timeout"]
            status = None
            while True:
                done, raw = os.waitpid(req["pid"], os.WNOHANG)
                if done:
                    status = _status(raw)
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            reply = {"status": status}
        elif req["op"] == "kill":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(req["pid"], signal.SIGKILL)
            try:
                reply = {"status": _status(os.waitpid(req["pid"], 0)[1])}
            except ChildProcessError:  # reaped by an earlier wait
                reply = {"status": None}
        else:
            reply = {"error": f"unknown op {req['op']!r}"}
        out.write(json.dumps(reply) + "\n")


class Zygote:
    """The test's end: start commands, wait for them, kill them."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import kill_harness; kill_harness.serve()"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> int:
        return self._ask(op="run", argv=[str(a) for a in argv], env=env, cwd=str(cwd), log=str(log))["pid"]

    def run_code(self, code: str, env: dict[str, str], cwd: Path, log: Path) -> int:
        return self._ask(op="run", code=code, env=env, cwd=str(cwd), log=str(log))["pid"]

    def wait(self, pid: int, timeout: float) -> int | None:
        return self._ask(op="wait", pid=pid, timeout=timeout)["status"]

    def kill(self, pid: int) -> int | None:
        return self._ask(op="kill", pid=pid)["status"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(log: Path, marker: str, zygote: Zygote, pid: int, timeout: float = 60.0) -> int | None:
    """Wait until ``marker`` appears in ``log`` (None) or the process ends first (its status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return None
        status = zygote.wait(pid, 0.05)
        if status is not None:
            return status
    raise AssertionError(f"{marker!r} did not appear in {log} within {timeout} s:\n{log.read_text()}")
