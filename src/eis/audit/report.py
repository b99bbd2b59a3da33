"""The audit's result: one object the CLI renders, the page shows and ``audit.json`` holds.

JSON contract (``AuditReport.to_json``), kept stable:

- ``verdict``: ``"suspicious"`` or ``"no evidence"``; ``suspected_target``: int or null;
- ``verdict_rule``: the rule in words; ``trusted_detector``: the detector the rule followed (or null);
- ``detectors``: one entry per detection tool: ``name``, ``input_level`` (scores inputs, not the model),
  ``score`` (float or null; null when ``status`` is ``ok`` only for an input-level tool), ``flagged`` (bool
  or null), ``p_value`` (the score against the clean shadows' scores, conformal: (1 + #{clean >= score}) /
  (n + 1); null without shadow calibration), ``target`` (int or null), ``status`` (``ok`` / ``refused`` /
  ``failed`` / ``not applicable``),
  ``reason`` (why, when not ok), ``track_record`` (the calibration table's entry plus ``text`` and
  ``source``: ``"shadows"`` when measured on shadow models like the user's, with ``tpr_ci``, ``fpr_ci``,
  ``auroc_ci`` and ``strength_curve``, and then ``zoo``: the record on eis's zoo; else ``"zoo"``);
- ``inputs``: the screened inputs, most suspicious first: ``index`` (in the screened set), ``file`` (or
  null), ``score`` (higher = more suspicious), ``prediction``;
- ``model``: ``num_classes``, ``input_shape``, ``clean_accuracy`` and ``n_examples`` (on the clean examples
  given); ``calibration``: which suites and eis version made the table, its ``source`` (``"shadows"`` or
  ``"zoo"``) and, for shadows, ``shadows``: counts, recipe, cache key, seconds; ``runtime_s``;
  ``eis_version``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from eis.paths import write_text_atomic

SUSPICIOUS, NO_EVIDENCE = "suspicious", "no evidence"
STATUSES = ("ok", "refused", "failed", "not applicable")


@dataclasses.dataclass
class DetectorResult:
    """One detection tool's outcome on the user's model."""

    name: str
    status: str
    control: bool = False
    input_level: bool = False  # scores inputs, not the model (no model-level score expected)
    score: float | None = None
    flagged: bool | None = None
    target: int | None = None
    p_value: float | None = None  # against the clean shadows' scores (shadow calibration only)
    reason: str = ""
    track_record: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    mask: torch.Tensor | None = None  # recovered trigger (H, W)
    pattern: torch.Tensor | None = None  # (C, H, W)

    def line(self) -> str:
        """The verdict line: score, decision and the tool's track record, in one sentence."""
        if self.status != "ok":
            return f"{self.name}: {self.status}" + (f" ({self.reason})" if self.reason else "")
        if self.score is None:
            head = f"{self.name}: input-level" if self.input_level else f"{self.name}: no score"
        else:
            thr = self.track_record.get("threshold")
            rule = f" (>= {thr:.3g}: {'suspicious' if self.flagged else 'not suspicious'})" if thr else ""
            tgt = f", target {self.target}" if self.target is not None and self.flagged else ""
            pv = f", p = {self.p_value:.2g} against clean shadows" if self.p_value is not None else ""
            head = f"{self.name}: score {self.score:.3g}{rule}{tgt}{pv}"
        return f"{head}. {self.track_record.get('text', '')}".rstrip(". ") + "."


@dataclasses.dataclass
class ScreenedInput:
    index: int
    score: float
    prediction: int
    file: str | None = None


@dataclasses.dataclass
class AuditReport:
    """Everything the audit found; ``to_json`` is the documented contract, ``write`` the page + JSON."""

    verdict: str
    suspected_target: int | None
    verdict_rule: str
    trusted_detector: str | None
    detectors: list[DetectorResult]
    inputs: list[ScreenedInput]
    num_classes: int
    input_shape: tuple[int, ...]
    calibration: dict[str, Any]
    runtime_s: float
    clean_accuracy: float | None = None  # on the clean examples the audit was given
    n_examples: int | None = None
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)  # images for the page (tensors)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def suspicious(self) -> bool:
        return self.verdict == SUSPICIOUS

    def detector(self, name: str) -> DetectorResult:
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        from eis import __version__

        return _finite(
            {
                "verdict": self.verdict,
                "suspected_target": self.suspected_target,
                "verdict_rule": self.verdict_rule,
                "trusted_detector": self.trusted_detector,
                "detectors": [
                    {
                        "name": d.name,
                        "control": d.control,
                        "input_level": d.input_level,
                        "score": d.score,
                        "flagged": d.flagged,
                        "p_value": d.p_value,
                        "target": d.target,
                        "status": d.status,
                        "reason": d.reason,
                        "track_record": d.track_record,
                        "details": d.details,
                    }
                    for d in self.detectors
                ],
                "inputs": [dataclasses.asdict(i) for i in self.inputs],
                "model": {
                    "num_classes": self.num_classes,
                    "input_shape": list(self.input_shape),
                    "clean_accuracy": self.clean_accuracy,
                    "n_examples": self.n_examples,
                },
                "calibration": self.calibration,
                "notes": self.notes,
                "runtime_s": self.runtime_s,
                "eis_version": __version__,
            }
        )

    def summary(self) -> list[str]:
        """The short terminal summary: verdict, one line per detector, the top screened inputs."""
        target = f", suspected target {self.suspected_target}" if self.suspected_target is not None else ""
        lines = [f"verdict: {self.verdict}{target} (rule: {self.verdict_rule})"]
        lines += [f"  {d.line()}" for d in self.detectors]
        if self.inputs:
            top = ", ".join(f"{i.file or i.index} ({i.score:.3g})" for i in self.inputs[:5])
            lines.append(f"  most suspicious inputs: {top}")
        return lines

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``audit.html`` and ``audit.json`` into ``out_dir``; return their paths.

        Each file is written under a temporary name and renamed into place, so a killed or failed write
        never leaves a partial file under the final name (an earlier audit's file stays whole until then).
        """
        from eis.audit.page import render_page

        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        j = out / "audit.json"
        write_text_atomic(j, json.dumps(self.to_json(), indent=1) + "\n")
        h = out / "audit.html"
        write_text_atomic(h, render_page(self))
        return h, j


def _finite(value: Any) -> Any:
    """Plain JSON: non-finite floats become null, tensors and numpy scalars plain values."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _finite(value.detach().cpu().tolist())
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return _finite(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
