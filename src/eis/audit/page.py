"""The audit page: one self-contained HTML file (inline CSS, images as data URIs, no script, no fetches).

It uses the report's style sheet and helpers, so an audit page looks like the benchmark report it draws on.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from eis.audit.calibration import tier_phrase
from eis.report.html import CSS, _e, _num
from eis.report.plots import data_uri

if TYPE_CHECKING:
    from eis.audit.report import AuditReport

EXTRA_CSS = """
.verdict { font-size: 20px; padding: 10px 14px; border-radius: 6px; margin: 12px 0; }
.verdict.suspicious { background: #fde7e4; border-left: 6px solid #b3261e; }
.verdict.clean { background: #e6f4ea; border-left: 6px solid #2e7d32; }
tr.flagged td { background: #fde7e4; }
tr.trusted td:first-child { font-weight: 700; }
"""


MAP_NOTE = (
    "<p class='muted'>Attribution overlays: |relevance| summed over channels, laid over the input, for the "
    "model's prediction (screened inputs) or the suspected target (stamped inputs).</p>"
)


def _png(image: torch.Tensor | np.ndarray, heat: bool = False, under: torch.Tensor | None = None) -> str:
    """A data URI of a (C, H, W) image in [0, 1] or, with ``heat``, an (H, W) map scaled to its max
    (laid over the grey version of the image ``under`` when given)."""
    from PIL import Image

    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if heat:
        a = a / (a.max() + 1e-12)
        rgb = np.stack([a, 0.35 * a, 1 - a], -1)  # blue (low) to orange-red (high)
        if under is not None:
            grey = under.detach().float().cpu().mean(0).numpy()[..., None]
            alpha = 0.25 + 0.6 * a[..., None]  # strong relevance shows, weak lets the image through
            rgb = alpha * rgb + (1 - alpha) * grey
    elif a.ndim == 3 and a.shape[0] == 1:
        rgb = np.repeat(a[0][..., None], 3, -1)
    elif a.ndim == 3:
        rgb = a.transpose(1, 2, 0)[..., :3]
    else:
        rgb = np.repeat(a[..., None], 3, -1)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return data_uri(buf.getvalue())


def _img(uri: str, title: str = "") -> str:
    return f'<img src="{uri}" alt="{_e(title)}" title="{_e(title)}">'


def _detector_rows(report: AuditReport) -> str:
    rows = []
    for d in report.detectors:
        cls = " ".join(
            c for c, on in (("flagged", d.flagged), ("trusted", d.name == report.trusted_detector),
                            ("control", d.control)) if on
        )  # fmt: skip
        decision = "–" if d.flagged is None else ("flags" if d.flagged else "does not flag")
        style = "muted" if d.status == "not applicable" else "fail"
        status = (
            d.status if d.status == "ok" else f'<span class="{style}">{_e(d.status)}</span>: {_e(d.reason)}'
        )
        badge = '<span class="badge">control</span>' if d.control else ""
        rows.append(
            f'<tr class="{cls}"><td>{_e(d.name)}{badge}</td><td>{status}</td>'
            f'<td class="num">{_num(d.score)}</td><td>{decision}</td>'
            f'<td class="num">{"–" if d.target is None else _e(d.target)}</td>'
            f'<td class="num">{_num(d.p_value, 2)}</td><td>{_record_html(d.track_record)}</td></tr>'
        )
    cols = ("detector", "status", "score", "decision", "target", "p (clean shadows)", "track record")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _record_html(record: dict[str, Any]) -> str:
    """The record the verdict used; under a shadow record, the zoo's for comparison."""
    text = _e(record.get("text", ""))
    zoo = record.get("zoo")
    if zoo:
        text += f"<br><span class='muted'>{_e(zoo.get('text', ''))}.</span>"
    return text


def _shadows(report: AuditReport) -> str:
    """How the shadows were made, and each detector's TPR by poison rate (where it stops seeing)."""
    sh = report.calibration.get("shadows")
    if not sh:
        return ""
    rec = sh.get("recipe", {})
    secs = sh.get("seconds", {})
    missed = sh.get("missed") or []
    head = (
        f"<p>{_e(sh.get('n_clean', '?'))} clean and {_e(sh.get('n_flawed', '?'))} flawed shadow models of "
        f"this architecture, trained on the training data given ({_e(rec.get('trainer') or 'eis loop')}, "
        f"{_e(rec.get('epochs', '?'))} epochs, {_e(rec.get('optimizer', '?'))}); clean accuracy at least "
        f"{_num(sh.get('min_accuracy'), 3)} (this model: {_num(sh.get('user_accuracy'), 3)}); flaws "
        f"{_e(', '.join(rec.get('kinds', [])))}, poison rate {_e(str(rec.get('poison_rate')))}. "
        f"{len(missed)} missed their bars. Cache key <code>{_e(sh.get('key', ''))}</code>; built in "
        f"{_num(secs.get('build'), 0)} s, detectors {_num(secs.get('detectors'), 0)} s.</p>"
    )
    rows = []
    for d in report.detectors:
        curve = d.track_record.get("strength_curve") or []
        if curve:
            cells = "".join(
                f"<td>{_num(c['poison_rate'][0], 3)}–{_num(c['poison_rate'][1], 3)}: TPR {_num(c['tpr'], 2)} "
                f"(n = {_e(c['n'])})</td>"
                for c in curve
            )
            rows.append(f"<tr><th>{_e(d.name)}</th>{cells}</tr>")
    table = f"<h3>TPR by poison rate</h3><table>{''.join(rows)}</table>" if rows else ""
    return f"<h2 id='shadows'>Shadow calibration</h2>{head}{table}"


def _triggers(report: AuditReport) -> str:
    cells = []
    for d in report.detectors:
        if d.mask is None or d.pattern is None:
            continue
        stamped = d.mask[None] * d.pattern
        cells.append(
            f"<tr><th>{_e(d.name)} (class {_e(d.target)})</th><td>{_img(_png(d.mask[None]), 'mask')}</td>"
            f"<td>{_img(_png(d.pattern), 'pattern')}</td>"
            f"<td>{_img(_png(stamped), 'mask x pattern')}</td></tr>"
        )
    if not cells:
        return '<p class="muted">No detector recovered a trigger.</p>'
    head = "<tr><th></th><th>mask</th><th>pattern</th><th>mask × pattern</th></tr>"
    return f'<table class="gallery">{head}{"".join(cells)}</table>'


def _norms(report: AuditReport) -> str:
    try:
        d = report.detector("neural_cleanse")
    except KeyError:
        return ""
    norms, idx = d.details.get("norms"), d.details.get("anomaly_index")
    if d.status != "ok" or not norms:
        return ""
    cells = "".join(
        f'<tr{" class=flagged" if k == d.target and d.flagged else ""}><td class="num">{k}</td>'
        f'<td class="num">{_num(n, 2)}</td><td class="num">{_num(a, 2)}</td></tr>'
        for k, (n, a) in enumerate(zip(norms, idx, strict=True))
    )
    return (
        "<h2 id='norms'>Neural Cleanse: per-class trigger norms</h2><p class='muted'>L1 norm of the smallest "
        "mask that sends clean inputs to each class; a trojan target needs an unusually small one "
        "(anomaly index = (median − norm) / (1.4826 · MAD)).</p>"
        f"<table><tr><th>class</th><th>L1 norm</th><th>anomaly index</th></tr>{cells}</table>"
    )


def _inputs(report: AuditReport, k: int = 20) -> str:
    if not report.inputs:
        return '<p class="muted">No inputs were given to screen (<code>--inputs</code>).</p>'
    rows = "".join(
        f'<tr><td class="num">{r + 1}</td><td class="num">{_e(s.index)}</td><td>{_e(s.file or "–")}</td>'
        f'<td class="num">{_num(s.score)}</td><td class="num">{_e(s.prediction)}</td></tr>'
        for r, s in enumerate(report.inputs[:k])
    )
    more = (
        f"<p class='muted'>{len(report.inputs) - k} more in audit.json.</p>" if len(report.inputs) > k else ""
    )
    return (
        "<p class='muted'>Ranked by STRIP: the negated mean prediction entropy under superimposition with "
        "clean examples (higher = more likely to carry a trigger).</p>"
        f"<table><tr><th>rank</th><th>index</th><th>file</th><th>score</th><th>prediction</th></tr>{rows}</table>"
        f"{more}"
    )


def _maps(ev: dict[str, Any]) -> str:
    parts = []
    for group, imgs in ev.get("maps", {}).items():
        xs = imgs["inputs"]
        rows = [f"<tr><th>input</th>{''.join(f'<td>{_img(_png(x))}</td>' for x in xs)}</tr>"]
        for tool in ev.get("attribution_tools", []):
            if tool in imgs:
                cells = "".join(
                    f"<td>{_img(_png(m, heat=True, under=x), tool)}</td>"
                    for m, x in zip(imgs[tool], xs, strict=True)
                )
                rows.append(f"<tr><th>{_e(tool)}</th>{cells}</tr>")
        parts.append(f"<h3>{_e(group)}</h3>{MAP_NOTE}<table class='gallery'>{''.join(rows)}</table>")
    if ev.get("stamped_success") is not None:
        parts.append(
            f"<p class='muted'>The recovered trigger sends {ev['stamped_success']:.0%} of these clean inputs "
            "to the suspected target.</p>"
        )
    for tool, msg in ev.get("failures", {}).items():
        parts.append(f"<p><span class='fail'>{_e(tool)} failed</span>: {_e(msg)}</p>")
    syn = ev.get("synthesis")
    if syn is not None:
        cells = "".join(f"<td>{_img(_png(im))}</td>" for im in syn["images"])
        parts.append(
            f"<h3>{_e(syn['tool'])}: images for the suspected target</h3>"
            f"<table class='gallery'><tr>{cells}</tr></table>"
        )
    return "".join(parts) or '<p class="muted">No evidence images (nothing suspicious to explain).</p>'


def render_page(report: AuditReport) -> str:
    """The audit page as one HTML string."""
    from eis import __version__

    sus = report.suspicious
    target = (
        f" — suspected target class {report.suspected_target}" if report.suspected_target is not None else ""
    )
    made = report.calibration
    where = (
        "shadow models like this one"
        if made.get("source") == "shadows"
        else f"eis's zoo ({tier_phrase(list(made.get('tiers') or ['toy']))})"
    )
    cal = (
        f"Track records measured on {where}, from the calibration table made by eis "
        f"{_e(made.get('eis_version', '?'))} from suite(s) "
        f"{_e(', '.join(made.get('suites', [])) or '?')} ({_e(', '.join(made.get('tracks', [])))} tracks). "
        f"{_e(made.get('note', ''))}"
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.notes)
    shape = "×".join(map(str, report.input_shape))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eis audit: {_e(report.verdict)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>{CSS}{EXTRA_CSS}</style></head><body>
<h1>eis audit</h1>
<p class="meta">eis {_e(__version__)} · model with {_e(report.num_classes)} classes, inputs {_e(shape)} ·
{len(report.inputs)} inputs screened · {_num(report.runtime_s, 1)} s</p>
<nav><a href="#detectors">Detectors</a><a href="#triggers">Recovered triggers</a><a href="#norms">Norms</a>
<a href="#inputs">Screened inputs</a><a href="#evidence">Evidence</a></nav>
<div class="verdict {"suspicious" if sus else "clean"}"><b>{_e(report.verdict)}</b>{_e(target)}</div>
<p class="note">Rule: {_e(report.verdict_rule)}. Followed: {_e(report.trusted_detector or "no detector")}.</p>
<h2 id="detectors">Detectors and their track records</h2>
<p class="muted">{cal}</p>
{_detector_rows(report)}
{f"<ul>{notes}</ul>" if notes else ""}
{_shadows(report)}
<h2 id="triggers">Recovered triggers</h2>
{_triggers(report)}
{_norms(report)}
<h2 id="inputs">Screened inputs</h2>
{_inputs(report)}
<h2 id="evidence">Evidence</h2>
{_maps(report.evidence)}
</body></html>
"""
