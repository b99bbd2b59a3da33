"""Progress for long work: rich bars on a terminal, periodic plain lines everywhere else.

Rich draws nothing live when its console is not a terminal (CI logs, ``make demo > log``), so a long
build or benchmark would print nothing for minutes. ``progress_display`` returns a rich ``Progress`` on a
terminal and a ``LineProgress`` (same calls) otherwise, which prints one line for the first task it was
given at most every ``every_s`` seconds and when that task finishes.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn

LINE_EVERY_S = 20.0


def progress_display(console: Console, *columns: ProgressColumn, every_s: float = LINE_EVERY_S) -> Any:
    """A rich Progress with ``columns`` on a terminal, else a LineProgress writing to ``console``."""
    if console.is_terminal:
        return Progress(*columns, console=console, transient=False)
    return LineProgress(console, every_s=every_s)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LineProgress:
    """The subset of ``rich.progress.Progress`` eis uses, reported as plain lines for its first task.

    Fields named ``failed`` and ``current`` (as in the bench bar) are shown in the line when present, and
    so are the other tasks in flight (e.g. the cases a zoo build is training), with their percentage.
    """

    def __init__(self, console: Console, every_s: float = LINE_EVERY_S) -> None:
        self.console = console
        self.every_s = every_s
        self.tasks: dict[int, dict[str, Any]] = {}
        self.main: int | None = None
        self.next_id = 0
        self.started = time.monotonic()
        self.last_line = float("-inf")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.main is not None and self.tasks[self.main]["completed"] < self.tasks[self.main]["total"]:
            self._line()

    def add_task(self, description: str, total: float | None = 100, **fields: Any) -> int:
        task = self.next_id
        self.next_id += 1
        self.tasks[task] = {"description": description, "total": total or 0, "completed": 0, **fields}
        if self.main is None:
            self.main = task
            self.started = time.monotonic()
            self._line()
        return task

    def update(
        self, task: int, *, completed: float | None = None, advance: float | None = None, **fields: Any
    ) -> None:
        t = self.tasks.get(task)
        if t is None:  # removed (as rich's Progress, updating a removed task is an error of the caller's)
            raise KeyError(task)
        before = t["completed"]
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        t.update(fields)
        finished = task == self.main and t["completed"] >= t["total"] > before
        if finished or time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def remove_task(self, task: int) -> None:
        self.tasks.pop(task, None)

    def _line(self) -> None:
        t = self.tasks[self.main]  # type: ignore[index]
        elapsed = time.monotonic() - self.started
        done, total = t["completed"], t["total"]
        parts = [f"{t['description']}: {done:g}/{total:g}"]
        if t.get("failed"):
            parts.append(f"{t['failed']} failed")
        parts.append(f"elapsed {_clock(elapsed)}")
        if 0 < done < total:
            parts.append(f"ETA {_clock(elapsed / done * (total - done))}")
        line = ", ".join(parts)
        if t.get("current") and done < total:
            line += f" - now: {t['current']}"
        others = [
            f"{o['description'].strip()} {100 * o['completed'] / o['total']:.0f}%"
            for k, o in self.tasks.items()
            if k != self.main and o["total"]
        ]
        if others and done < total:
            line += f" - in progress: {', '.join(others)}"
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        self.last_line = time.monotonic()
