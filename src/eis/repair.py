"""``eis repair`` as a Python API: remove a trojan from an engineer's own model with their clean data.

The same repair methods the ``repair`` track scores on the zoo (``eis.tools.repair``), applied to a model
that has no sealed truth. The labelled data is split (seeded) into a budget the method may use and a
held-out validation part it never sees; the report gives clean accuracy on the held-out part before and
after, and, where Neural Cleanse recovered a trigger from the budget, that trigger's attack success rate
(ASR: the share of held-out inputs of other classes it sends to the flagged target) before and after.

``method="auto"`` picks the method the repair track ranked best on the standard zoo for what the detector
found: ``nc_unlearning`` when Neural Cleanse flags a trigger, else ``fine_pruning`` (which needs no
detection). Example::

    import eis.repair
    from eis.usermodel import load_examples, load_model, save_weights

    model = load_model("model.safetensors", "my_pkg.nets:small_cnn")
    x, y, _ = load_examples("clean_data/")
    repaired, report = eis.repair.repair(model, x, y)
    save_weights(eis.repair.unwrap(repaired), "repaired.safetensors")
    report.write("eis-repair/")          # repair.html + repair.json
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eis.errors import EisError
from eis.health import check_model
from eis.paths import write_text_atomic
from eis.tools.base import make_tool
from eis.tools.detection.base import Detection
from eis.tools.repair.base import FLAG_THRESHOLD, RepairTool, neural_cleanse
from eis.tools.repair.pruning import accuracy
from eis.usermodel import Normalized, check_compatible

AUTO = {"flagged": "nc_unlearning", "not_flagged": "fine_pruning"}
MIN_VALIDATION = 10  # held-out inputs needed for a before/after accuracy worth printing
DETECTOR_STEPS = 100


@dataclasses.dataclass
class RepairReport:
    """What a repair did, measured on held-out data the method never saw."""

    method: str
    settings: dict[str, Any]
    n_budget: int
    n_validation: int
    acc_before: float
    acc_after: float
    detection: dict[str, Any] | None = None  # score, target, flagged (Neural Cleanse on the budget)
    trigger_asr_before: float | None = None
    trigger_asr_after: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    trigger_png: bytes | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("trigger_png")
        return json.loads(json.dumps(out, default=str))

    def summary(self) -> list[str]:
        lines = [
            f"method {self.method}: budget {self.n_budget} inputs, {self.n_validation} held out",
            f"clean accuracy (held out): {self.acc_before:.3f} -> {self.acc_after:.3f}",
        ]
        if self.detection is not None:
            d = self.detection
            flag = "flagged" if d["flagged"] else "not flagged"
            lines.append(
                f"neural cleanse: anomaly index {d['score']:.2f} ({flag}), target class {d['target']}"
            )
        if self.trigger_asr_before is not None:
            before, after = self.trigger_asr_before, self.trigger_asr_after
            lines.append(f"recovered trigger ASR (held out): {before:.3f} -> {after:.3f}")
        return lines

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``repair.html`` (self-contained) and ``repair.json`` into folder ``out``."""
        folder = Path(out).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        js = folder / "repair.json"
        write_text_atomic(js, json.dumps(self.to_json(), indent=2, sort_keys=True))
        page = folder / "repair.html"
        rows = "".join(f"<li>{html.escape(line)}</li>" for line in self.summary())
        img = ""
        if self.trigger_png is not None:
            uri = "data:image/png;base64," + base64.b64encode(self.trigger_png).decode()
            img = (
                f"<h2>Recovered trigger</h2><img src='{uri}' alt='recovered trigger' "
                "style='width:128px;image-rendering:pixelated'>"
            )
        write_text_atomic(
            page,
            "<!doctype html><html><head><meta charset='utf-8'><title>eis repair</title></head><body>"
            f"<h1>eis repair: {html.escape(self.method)}</h1><ul>{rows}</ul>{img}"
            f"<h2>Details</h2><pre>{html.escape(json.dumps(self.to_json(), indent=2))}</pre></body></html>",
        )
        return page, js


def split(n: int, validation: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (budget, validation) index split; refuses when either part would be too small."""
    if not 0 < validation < 1:
        raise EisError(f"validation share must be in (0, 1); got {validation}")
    n_val = math.floor(validation * n)
    if n_val < MIN_VALIDATION or n - n_val < 1:
        need = math.ceil(MIN_VALIDATION / validation) + 1
        raise EisError(
            f"{n} labelled inputs are too few to hold out a validation split ({validation:g} of them must "
            f"be >= {MIN_VALIDATION} inputs and leave a budget); give at least {need}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def unwrap(model: nn.Module) -> nn.Module:
    """The user's own module inside a ``Normalized`` wrapper (whose weights load into their factory)."""
    return model.model if isinstance(model, Normalized) else model


def repair(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "auto",
    settings: dict[str, Any] | None = None,
    validation: float = 0.2,
    detector_steps: int = DETECTOR_STEPS,
    seed: int = 0,
) -> tuple[nn.Module, RepairReport]:
    """Repair a copy of ``model`` with part of ``(x, y)``; return it and the before/after report.

    ``method``: a registered repair method or "auto" (see the module docstring); ``settings`` its keyword
    settings. ``validation``: the share of ``(x, y)`` held out for the report. Neural Cleanse runs on the
    budget whenever the model has at least 3 classes (its output is what detection-based methods use, and
    its trigger's ASR is reported); ``detector_steps`` sets its optimisation steps.
    """
    k = check_compatible(model, x, y)
    check_model(model, x, y, what="repaired")
    budget, held = split(x.shape[0], validation, seed)
    xb, yb, xv, yv = x[budget], y[budget], x[held], y[held]
    detection = None
    if method != "auto":
        tool = _method(method, settings, seed)
        detector = tool.detector_tool()
    else:
        detector = None
    if detector is None and k >= 3:
        detector = neural_cleanse(detector_steps, seed)
    if detector is not None:
        detection = detector.inspect(model, xb.clone(), yb.clone(), k)
    flagged = detection is not None and detection.mask is not None and detection.score > FLAG_THRESHOLD
    if method == "auto":
        method = AUTO["flagged" if flagged else "not_flagged"]
        tool = _method(method, settings, seed)
    repaired = tool.repair(model, xb, yb, k, detection=detection)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    xv_d, yv_d = xv.to(dev), yv.to(dev)
    report = RepairReport(
        method=method,
        settings=tool.settings(),
        n_budget=int(xb.shape[0]),
        n_validation=int(xv.shape[0]),
        acc_before=accuracy(model, xv_d, yv_d),
        acc_after=accuracy(repaired.model, xv_d, yv_d),
        details=json.loads(json.dumps(repaired.details, default=str)),
    )
    if detection is not None:
        report.detection = {"score": float(detection.score), "target": detection.target, "flagged": flagged}
    if detection is not None and detection.mask is not None and detection.target is not None:
        other = yv_d != int(detection.target)
        if bool(other.any()):
            stamped = detection.stamp(xv_d[other])
            target = torch.full_like(yv_d[other], int(detection.target))
            report.trigger_asr_before = accuracy(model, stamped, target)
            report.trigger_asr_after = accuracy(repaired.model, stamped, target)
        report.trigger_png = _trigger_png(detection)
    return repaired.model, report


def _method(name: str, settings: dict[str, Any] | None, seed: int) -> RepairTool:
    from eis.tools.base import list_tools

    valid = list_tools("repair")
    if name not in valid:
        raise EisError(f"unknown repair method {name!r}; valid: auto, {', '.join(valid)}")
    settings = dict(settings or {})
    tool = make_tool(name, **settings)
    if "seed" in {f.name for f in dataclasses.fields(tool)} and "seed" not in settings:
        tool = dataclasses.replace(tool, seed=seed)
    assert isinstance(tool, RepairTool)
    return tool


def _trigger_png(detection: Detection) -> bytes:
    from eis.results.store import encode_png

    stamped = (detection.mask * detection.pattern).clamp(0, 1)  # type: ignore[operator]
    return encode_png(stamped.float().cpu().numpy())
