"""The static HTML report: one self-contained file (inline CSS, images and plots as data URIs, no script).

It opens offline and from any folder: nothing is fetched (no CDN, no fonts, no favicon request).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import re
from importlib import metadata
from pathlib import Path

import pandas as pd

from eis.report import plots
from eis.report.casper import CASPER_2023
from eis.report.tables import ReportData, TrackSection, build_report_data
from eis.report.transfer import REALISTIC, TOY, TrackTransfer
from eis.results.store import Store

CSS = """
:root { --fg:#1d2430; --muted:#5c6777; --line:#d9dee6; --ctl:#fff4e0; --ctl-line:#e7b15c; --accent:#3b6fb6; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { margin: 0 0 4px; font-size: 26px; } h2 { margin-top: 40px; border-bottom: 2px solid var(--line); }
h3 { margin: 22px 0 8px; font-size: 17px; }
.meta, .muted { color: var(--muted); font-size: 13px; }
.note { background: #f3f5f8; border-left: 4px solid var(--muted); padding: 6px 10px; margin: 8px 0; }
nav a { margin-right: 14px; color: var(--accent); }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.num { text-align: right; }
tr.control td { background: var(--ctl); }
tr.control td:first-child { border-left: 4px solid var(--ctl-line); }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px;
         background: var(--ctl-line); color: #fff; margin-left: 6px; }
.fail { color: #b3261e; font-weight: 600; }
img.plot { max-width: 100%; display: block; margin: 8px 0; }
.gallery td, .gallery th { border: 0; padding: 2px 4px; }
.gallery th { background: none; font-weight: 500; font-size: 13px; text-align: right; white-space: nowrap; }
.gallery img { width: 80px; height: 80px; image-rendering: pixelated; border: 1px solid var(--line);
               display: block; object-fit: contain; background: #fff; }
.gallery tr.shared th { font-weight: 700; }
details { margin: 8px 0; } pre { white-space: pre-wrap; margin: 0; font-size: 12px; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _ci(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{lo:.3f}, {hi:.3f}]"


def _tool_cell(tool: str, control: bool) -> str:
    return _e(tool) + ('<span class="badge">control</span>' if control else "")


def _sanity_cell(verdict: str) -> str:
    return '<span class="fail">fails sanity</span>' if verdict == "FAIL" else _e(verdict)


def _leaderboard_html(sec: TrackSection) -> str:
    head = (
        "<tr><th>#</th><th>tool</th><th>" + _e(sec.headline) + " (mean)</th><th>95% CI</th><th>n</th>"
        '<th>verdict</th><th title="cells not applicable (the tool refused the case) are not failures">'
        "failed / cells</th><th>mean runtime (s)</th>"
        '<th title="model-randomisation sanity check (Adebayo et al. 2018)">sanity</th></tr>'
    )
    body = []
    for i, r in sec.leaderboard.iterrows():
        cls = ' class="control"' if r["control"] else ""
        failed = f'<span class="fail">{r["failed"]}</span>' if r["failed"] else "0"
        na = int(r["not_applicable"])
        na_note = f' <span class="muted">({na} not applicable)</span>' if na else ""
        body.append(
            f'<tr{cls} data-tool="{_e(r["tool"])}"><td>{i + 1}</td>'
            f"<td>{_tool_cell(r['tool'], r['control'])}</td><td class=num>{_num(r['mean'])}</td>"
            f"<td class=num>{_ci(r['lo'], r['hi'])}</td>"
            f"<td class=num>{r['n']}</td><td>{_e(r['verdict'])}</td>"
            f"<td class=num>{failed} / {r['cells']}{na_note}</td><td class=num>{_num(r['runtime_s'], 2)}</td>"
            f"<td>{_sanity_cell(r['sanity'])}</td></tr>"
        )
    return (
        f'<table class="leaderboard" data-track="{_e(sec.name)}"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _by_flaw_html(sec: TrackSection) -> str:
    if sec.by_flaw.empty:
        return '<p class="muted">No per-flaw breakdown (the track reports pooled numbers only).</p>'
    flaws = sorted(sec.by_flaw["flaw"].astype(str).unique())
    head = "<tr><th>tool</th>" + "".join(f"<th>{_e(f)}</th>" for f in flaws) + "</tr>"
    body = []
    for _, lb in sec.leaderboard.iterrows():
        sub = sec.by_flaw[sec.by_flaw["tool"] == lb["tool"]]
        if sub.empty:
            continue
        cells = []
        for f in flaws:
            m = sub[sub["flaw"].astype(str) == f]
            if m.empty:
                cells.append("<td class=num>–</td>")
            else:
                r = m.iloc[0]
                cells.append(
                    f"<td class=num>{_num(r['mean'])} <span class=muted>{_ci(r['lo'], r['hi'])}</span></td>"
                )
        cls = ' class="control"' if lb["control"] else ""
        body.append(f"<tr{cls}><td>{_tool_cell(lb['tool'], lb['control'])}</td>{''.join(cells)}</tr>")
    return f'<table class="by-flaw"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _metrics_html(sec: TrackSection) -> str:
    long = sec.long
    if long.empty:
        return ""
    pooled = long[long["flaw"] == "all"]
    metrics = [m for m in dict.fromkeys(pooled["metric"]) if m != sec.headline]
    if not metrics:
        return ""
    head = "<tr><th>tool</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>"
    body = []
    for _, lb in sec.leaderboard.iterrows():
        sub = pooled[pooled["tool"] == lb["tool"]].set_index("metric")
        tds = "".join(
            f"<td class=num>{_num(float(sub.loc[m, 'mean']))}</td>" if m in sub.index else "<td>–</td>"
            for m in metrics
        )
        cls = ' class="control"' if lb["control"] else ""
        body.append(f"<tr{cls}><td>{_tool_cell(lb['tool'], lb['control'])}</td>{tds}</tr>")
    return (
        f'<h3>Other metrics (pooled)</h3><table class="metrics"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _split_name(name: str) -> tuple[str, int]:
    """``"map_3"`` -> ``("map", 3)``; names without an index get column 0."""
    m = re.fullmatch(r"(.*?)_(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def _gallery_rows(case: dict) -> list[tuple[str, bool, dict[int, tuple[str, bytes]]]]:
    """Grid rows (label, shared?, column -> (name, png)): shared images by kind, then each tool's own."""
    rows: dict[tuple[str, str], dict[int, tuple[str, bytes]]] = {}
    shared_flags: dict[tuple[str, str], bool] = {}
    for name, png in case["shared"].items():
        base, col = _split_name(name)
        rows.setdefault(("", base), {})[col] = (name, png)
        shared_flags[("", base)] = True
    for tool, imgs in case["tools"]:
        bases = {_split_name(n)[0] for n in imgs}
        for name, png in imgs.items():
            base, col = _split_name(name)
            rows.setdefault((tool, base if len(bases) > 1 else ""), {})[col] = (name, png)
    out = []
    for (tool, base), cells in rows.items():
        label = f"{tool}: {base}" if tool and base else (tool or base)
        out.append((label, shared_flags.get((tool, base), False), cells))
    return out


def _gallery_html(sec: TrackSection) -> str:
    if not sec.gallery:
        return ""
    parts = [
        "<h3>Gallery</h3>",
        '<p class="muted">The same inputs for every tool: images shared by all tools (e.g. input and '
        "ground-truth mask) first, then each tool's own output.</p>",
    ]
    for case in sec.gallery:
        rows = _gallery_rows(case)
        cols = sorted({c for _, _, cells in rows for c in cells})
        trs = []
        for label, shared, cells in rows:
            tds = "".join(
                f'<td><img alt="{_e(label)} {_e(cells[c][0])}" src="{plots.data_uri(cells[c][1])}"></td>'
                if c in cells
                else "<td></td>"
                for c in cols
            )
            trs.append(f"<tr{' class=shared' if shared else ''}><th>{_e(label)}</th>{tds}</tr>")
        flaw = f" ({_e(case['flaw'])})" if case["flaw"] else ""
        parts.append(
            f"<p><b>{_e(case['case'])}</b>{flaw}</p>"
            f'<table class="gallery" data-case="{_e(case["case"])}"><tbody>{"".join(trs)}</tbody></table>'
        )
    return "".join(parts)


def _failures_html(sec: TrackSection) -> str:
    if sec.failures.empty:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r['tool'])}</td><td>{_e(r['case_name'])}</td><td><pre>{_e(r['error'])}</pre></td></tr>"
        for _, r in sec.failures.iterrows()
    )
    return (
        f"<details><summary>{len(sec.failures)} failed cells</summary>"
        f'<table class="failures"><thead><tr><th>tool</th><th>case</th><th>error</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></details>"
    )


def _not_applicable_html(sec: TrackSection) -> str:
    """The cells whose tool refused the case, with its reason: not failures, and in no mean."""
    if sec.not_applicable.empty:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r['tool'])}</td><td>{_e(r['case_name'])}</td><td>{_e(r['error'])}</td></tr>"
        for _, r in sec.not_applicable.iterrows()
    )
    n = len(sec.not_applicable)
    return (
        f"<details><summary>{n} cell{'s' if n != 1 else ''} not applicable (the tool refused the case)"
        f'</summary><table class="not-applicable"><thead><tr><th>tool</th><th>case</th><th>reason</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></details>"
    )


def _anchor(sec: TrackSection) -> str:
    """The section's id: ``track-<name>``, with its settings where they are not the track's defaults."""
    if not sec.settings:
        return f"track-{sec.name}"
    return "track-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", sec.title).strip("-")


def _section_html(sec: TrackSection) -> str:
    out = [f'<section id="{_e(_anchor(sec))}"><h2>{_e(sec.title)}</h2>']
    if sec.summary:
        out.append(f"<p>{_e(sec.summary)}</p>")
    out += [f'<p class="note">{_e(n)}</p>' for n in sec.notes]
    if sec.leaderboard.empty:
        return "".join(out) + "</section>"
    direction = "higher" if sec.higher_is_better else "lower"
    out.append(
        f"<h3>Leaderboard</h3><p class=muted>Headline metric <b>{_e(sec.headline)}</b> "
        f"({direction} is better), "
        "mean over cases with a bootstrap 95% CI; controls are highlighted. A tool only works where it beats "
        "the controls by more than the noise.</p>"
    )
    out.append(_leaderboard_html(sec))
    chart = plots.leaderboard_chart(sec.leaderboard, sec.headline, sec.higher_is_better)
    if chart:
        out.append(f'<img class="plot" alt="{_e(sec.name)} leaderboard chart" src="{chart}">')
    out.append("<h3>By flaw type</h3>" + _by_flaw_html(sec))
    fchart = plots.flaw_chart(sec.by_flaw, sec.headline, list(sec.leaderboard["tool"]))
    if fchart:
        out.append(f'<img class="plot" alt="{_e(sec.name)} per-flaw chart" src="{fchart}">')
    for caption, uri in sec.figures:
        out.append(
            f'<figure><img class="plot" alt="{_e(caption)}" src="{uri}"><figcaption>{_e(caption)}'
            "</figcaption></figure>"
        )
    out += [_metrics_html(sec), _gallery_html(sec), _failures_html(sec), _not_applicable_html(sec)]
    out.append("</section>")
    return "".join(out)


def _mean_ci_cells(mean: float, lo: float, hi: float) -> str:
    return f"<td class=num>{_num(mean)} <span class=muted>{_ci(lo, hi)}</span></td>"


def _rank(r: float) -> str:
    return "–" if not math.isfinite(r) else f"{r:g}"


def _transfer_html(tt: TrackTransfer) -> str:
    direction = "higher" if tt.higher_is_better else "lower"
    cases = ", ".join(f"{n} {_e(t)}" for t, n in tt.n_cases.items())
    out = [
        f"<h3>{_e(tt.track)}</h3><p>Spearman rank correlation of the toy and realistic rankings: "
        f"<b>{_num(tt.spearman)}</b> {_ci(tt.spearman_lo, tt.spearman_hi)} over {tt.n_tools} tools "
        f"(headline <b>{_e(tt.headline)}</b>, {direction} is better; cases: {cases}).</p>"
    ]
    out += [f'<p class="note">{_e(n)}</p>' for n in tt.notes]
    if not tt.tools.empty:
        head = (
            f"<tr><th>tool</th><th>toy {_e(tt.headline)} [95% CI]</th><th>realistic [95% CI]</th>"
            "<th>change (realistic - toy)</th><th>rank toy</th><th>rank realistic</th></tr>"
        )
        body = []
        for _, r in tt.tools.iterrows():
            cls = ' class="control"' if r["control"] else ""
            body.append(
                f"<tr{cls}><td>{_tool_cell(r['tool'], r['control'])}</td>"
                + _mean_ci_cells(r["toy_mean"], r["toy_lo"], r["toy_hi"])
                + _mean_ci_cells(r["realistic_mean"], r["realistic_lo"], r["realistic_hi"])
                + _mean_ci_cells(r["change"], r["change_lo"], r["change_hi"])
                + f"<td class=num>{_rank(r['toy_rank'])}</td>"
                + f"<td class=num>{_rank(r['realistic_rank'])}</td></tr>"
            )
        out.append(
            f'<table class="transfer" data-track="{_e(tt.track)}"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    if not tt.decisions.empty:
        rows = "".join(
            f"<tr><td>{_e(r['tool'])}</td><td>{_e(r['tier'])}</td>"
            + _mean_ci_cells(r["tpr"], r["tpr_lo"], r["tpr_hi"])
            + f"<td class=num>{r['n_trojaned']}</td>"
            + _mean_ci_cells(r["fpr"], r["fpr_lo"], r["fpr_hi"])
            + f"<td class=num>{r['n_clean']}</td></tr>"
            for _, r in tt.decisions.iterrows()
        )
        out.append(
            "<p>Decisions at each detector's own threshold (Wilson 95% intervals):</p>"
            '<table class="decisions"><thead><tr><th>tool</th><th>tier</th><th>TPR</th><th>trojaned</th>'
            f"<th>FPR</th><th>clean</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return "".join(out)


def _casper_html(df: pd.DataFrame, tier: str) -> str:
    n = int(df["n"].max()) if len(df) else 0
    head = (
        "<tr><th>tool</th><th>pearson [95% CI]</th><th>beats the edge detector?</th>"
        "<th>l1_distance [95% CI]</th><th>beats the blank map?</th>"
        "<th>paper pearson (ResNet50 / VGG19)</th><th>paper: beat the blank map (L1)?</th></tr>"
    )
    body = []
    for _, r in df.iterrows():
        cls = ' class="control"' if r["control"] else ""
        body.append(
            f"<tr{cls}><td>{_tool_cell(r['tool'], r['control'])}</td>"
            + _mean_ci_cells(r["pearson"], r["pearson_lo"], r["pearson_hi"])
            + f"<td>{_e(r['vs_edge_detector'])}</td>"
            + _mean_ci_cells(r["l1_distance"], r["l1_lo"], r["l1_hi"])
            + f"<td>{_e(r['vs_blank_map'])}</td><td class=num>{_e(r['paper_pearson'])}</td>"
            f"<td>{_e(r['paper_l1'])}</td></tr>"
        )
    return (
        f"<h3>Casper et al. protocol: {_e(tier)} tier, patch trojans ({n} cases)</h3>"
        f'<table class="casper" data-tier="{_e(tier)}"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _tiers_html(data: ReportData) -> str:
    """The transfer between tiers and the Casper et al. protocol tables; "" where the store has neither."""
    if not data.transfer and not data.casper:
        return ""
    out = ['<section id="tiers"><h2>Toy and realistic tiers</h2>']
    if data.transfer:
        out.append(
            "<p>Does a tool's standing on the toy tier carry over to the realistic tier? Per track scored on "
            "both: each tool's headline (mean over cases, bootstrap 95% CI over cases), its change, and the "
            "Spearman correlation of the two rankings (cases resampled within each tier).</p>"
        )
        out += [_transfer_html(tt) for tt in data.transfer]
    for tier in (REALISTIC, TOY):
        if tier in data.casper:
            out.append(_casper_html(data.casper[tier], tier))
    if data.casper:
        out.append(f'<p class="muted">Paper: {_e(CASPER_2023.citation)}.</p>')
    out.append("</section>")
    return "".join(out)


def render_html(data: ReportData) -> str:
    """The whole report as one HTML string."""
    try:
        version = metadata.version("eis")
    except metadata.PackageNotFoundError:
        version = "?"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{_e(_anchor(s))}">{_e(s.title)}</a>' for s in data.sections)
    tiers = _tiers_html(data)
    nav += '<a href="#tiers">tiers</a>' if tiers else ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in data.notes)
    body = "".join(_section_html(s) for s in data.sections) + tiers
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>eis report</title>'
        f"<style>{CSS}</style></head><body>"
        "<h1>eis report</h1>"
        f'<p class="meta">{data.n_cells} cells from {_e(data.store_path)} · eis {_e(version)} · {now}</p>'
        f"<nav>{nav}</nav>{notes}{body}</body></html>"
    )


def write_html(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(store: str | Path | Store | None = None, out_dir: str | Path = "eis-report") -> Path:
    """Build the report from ``store`` and write it into ``out_dir``; returns the HTML file's path."""
    return write_html(build_report_data(store), out_dir)


__all__ = ["render_html", "write_html", "write_report"]
