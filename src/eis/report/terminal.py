"""The terminal leaderboard: one rich table per track, controls highlighted; then, where the store has
both tiers, the transfer tables and the Casper et al. protocol tables."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eis.report.casper import CASPER_2023
from eis.report.tables import ReportData, TrackSection
from eis.report.transfer import REALISTIC, TOY, TrackTransfer


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


def _mean_ci(mean: float, lo: float, hi: float) -> str:
    ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else ""
    return f"{_fmt(mean)}{ci}"


def _rank(r: float) -> str:
    return "–" if not math.isfinite(r) else f"{r:g}"


def transfer_table(tt: TrackTransfer) -> Table:
    """Rich table: each tool's headline on the toy and the realistic tier, the change and both ranks; the
    title holds the Spearman correlation of the two rankings."""
    direction = "higher" if tt.higher_is_better else "lower"
    rho = f"Spearman {_mean_ci(tt.spearman, tt.spearman_lo, tt.spearman_hi)} over {tt.n_tools} tools"
    cases = ", ".join(f"{n} {t}" for t, n in tt.n_cases.items())
    title = escape(
        f"{tt.track}: toy -> realistic, {tt.headline} ({direction} is better); {rho}; cases: {cases}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("tool", no_wrap=True)
    for head in (f"toy {tt.headline} [95% CI]", "realistic [95% CI]", "change [95% CI]"):
        table.add_column(head, justify="right", no_wrap=True)
    table.add_column("rank toy", justify="right")
    table.add_column("rank realistic", justify="right")
    for _, r in tt.tools.iterrows():
        tool = f"{escape(str(r['tool']))} [dim](control)[/]" if r["control"] else escape(str(r["tool"]))
        table.add_row(
            tool,
            _mean_ci(r["toy_mean"], r["toy_lo"], r["toy_hi"]),
            _mean_ci(r["realistic_mean"], r["realistic_lo"], r["realistic_hi"]),
            _mean_ci(r["change"], r["change_lo"], r["change_hi"]),
            _rank(r["toy_rank"]),
            _rank(r["realistic_rank"]),
            style="yellow" if r["control"] else None,
        )
    return table


def decisions_table(tt: TrackTransfer) -> Table:
    """Rich table: per detector and tier, TPR and FPR at the detector's own threshold (Wilson 95% CIs)."""
    table = Table(title=escape(f"{tt.track}: decisions at each detector's threshold"), title_justify="left")
    for head in ("tool", "tier", "TPR [95% CI]", "trojaned", "FPR [95% CI]", "clean"):
        table.add_column(head, justify="left" if head in ("tool", "tier") else "right", no_wrap=True)
    for _, r in tt.decisions.iterrows():
        table.add_row(
            escape(str(r["tool"])),
            str(r["tier"]),
            _mean_ci(r["tpr"], r["tpr_lo"], r["tpr_hi"]),
            str(r["n_trojaned"]),
            _mean_ci(r["fpr"], r["fpr_lo"], r["fpr_hi"]),
            str(r["n_clean"]),
        )
    return table


def casper_rich_table(df: pd.DataFrame, tier: str) -> Table:
    """Rich table: the Casper et al. protocol on one tier's patch trojans, the paper's numbers beside."""
    n = int(df["n"].max()) if len(df) else 0
    title = escape(f"Casper et al. protocol, {tier} tier, patch trojans ({n} cases)")
    table = Table(title=title, title_justify="left")
    table.add_column("tool", no_wrap=True)
    table.add_column("pearson [95% CI]", justify="right", no_wrap=True)
    table.add_column("beats the edge detector?")
    table.add_column("l1_distance [95% CI]", justify="right", no_wrap=True)
    table.add_column("beats the blank map?")
    table.add_column("paper pearson (ResNet50 / VGG19)", justify="right")
    table.add_column("paper: beat the blank map (L1)?")
    for _, r in df.iterrows():
        tool = f"{escape(str(r['tool']))} [dim](control)[/]" if r["control"] else escape(str(r["tool"]))
        table.add_row(
            tool,
            _mean_ci(r["pearson"], r["pearson_lo"], r["pearson_hi"]),
            escape(str(r["vs_edge_detector"])),
            _mean_ci(r["l1_distance"], r["l1_lo"], r["l1_hi"]),
            escape(str(r["vs_blank_map"])),
            escape(str(r["paper_pearson"])),
            escape(str(r["paper_l1"])),
            style="yellow" if r["control"] else None,
        )
    return table


def print_tiers(data: ReportData, console: Console) -> None:
    """Print the transfer tables (tracks scored on both tiers) and the Casper et al. protocol tables."""
    for tt in data.transfer:
        if not tt.tools.empty:
            console.print(transfer_table(tt))
        if not tt.decisions.empty:
            console.print(decisions_table(tt))
        for note in tt.notes:
            console.print(f"[yellow]note ({escape(tt.track)} transfer):[/] {escape(note)}", highlight=False)
    for tier in (REALISTIC, TOY):
        if tier in data.casper:
            console.print(casper_rich_table(data.casper[tier], tier))
    if data.casper:
        console.print(f"[dim]paper: {escape(CASPER_2023.citation)}[/]", highlight=False)


def print_report(data: ReportData, console: Console) -> None:
    """Print every track's leaderboard, the tier tables where the store has them, and the notes."""
    for note in data.notes:
        console.print(f"[yellow]note:[/] {escape(str(note))}", highlight=False)
    for sec in data.sections:
        for note in sec.notes:
            console.print(f"[yellow]note ({escape(sec.title)}):[/] {escape(str(note))}", highlight=False)
        if not sec.leaderboard.empty:
            console.print(leaderboard_table(sec))
    print_tiers(data, console)
