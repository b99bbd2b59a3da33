"""The terminal leaderboard: one rich table per track, controls highlighted."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eis.report.tables import ReportData, TrackSection


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def _verdict_column(sec: TrackSection) -> tuple[str, list[str]]:
    """A short verdict column: "beats the edge detector: yes (margin ...)" -> header "beats the edge
    detector?" and cell "yes" (the HTML report keeps the margin and its CI)."""
    parts = [str(v).split(": ", 1) for v in sec.leaderboard["verdict"]]
    answers = [p[-1].split(" (")[0] for p in parts]
    questions = {p[0] for p in parts if len(p) == 2}
    if len(questions) != 1:
        return "verdict", [": ".join(p[:-1] + [a]) for p, a in zip(parts, answers, strict=True)]
    return f"{questions.pop()}?", answers


def leaderboard_table(sec: TrackSection) -> Table:
    """Rich table: tool, headline mean [lo, hi], n, verdict, failures, cells not applicable (where any);
    control rows highlighted."""
    direction = "higher" if sec.higher_is_better else "lower"
    title = escape(f"{sec.title}: {sec.headline} ({direction} is better)")
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("tool", no_wrap=True)
    table.add_column(f"{sec.headline} mean [95% CI]", justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    question, answers = _verdict_column(sec)
    table.add_column(question)
    table.add_column("failed", justify="right")
    with_na = bool((sec.leaderboard["not_applicable"] > 0).any())
    if with_na:
        table.add_column("not applicable", justify="right")
    with_sanity = bool((sec.leaderboard["sanity"] != "").any())
    if with_sanity:
        table.add_column("sanity")
    for i, r in sec.leaderboard.iterrows():
        ci = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if math.isfinite(r["lo"]) else ""
        failed = f"[red]{r['failed']}[/]/{r['cells']}" if r["failed"] else f"0/{r['cells']}"
        tool = f"{escape(str(r['tool']))} [dim](control)[/]" if r["control"] else escape(str(r["tool"]))
        sanity = ["[red]FAIL[/]" if r["sanity"] == "FAIL" else r["sanity"]] if with_sanity else []
        na = [f"[cyan]{r['not_applicable']}[/]" if r["not_applicable"] else "0"] if with_na else []
        table.add_row(
            str(i + 1),
            tool,
            f"{_fmt(r['mean'])} {ci}",
            str(r["n"]),
            escape(answers[i]),
            failed,
            *na,
            *sanity,
            style="yellow" if r["control"] else None,
        )
    return table


def print_report(data: ReportData, console: Console) -> None:
    """Print every track's leaderboard and the notes."""
    for note in data.notes:
        console.print(f"[yellow]note:[/] {escape(str(note))}", highlight=False)
    for sec in data.sections:
        for note in sec.notes:
            console.print(f"[yellow]note ({escape(sec.title)}):[/] {escape(str(note))}", highlight=False)
        if not sec.leaderboard.empty:
            console.print(leaderboard_table(sec))
