"""Audit an engineer's own model: every applicable detector, each verdict beside its measured track record.

``eis.audit(model, x, y, inputs=...)`` (this module is callable) or :func:`audit` returns an
:class:`AuditReport`; ``report.write(out_dir)`` writes ``audit.html`` and ``audit.json``. The track
records come from a calibration table (:mod:`eis.audit.calibration`) built from a results store by
``eis calibrate``; a default one ships with the package. :func:`audit_lm` audits a causal language model
(:mod:`eis.audit.lm`).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from eis.audit.calibration import build_calibration, load_calibration, save_calibration
from eis.audit.lm import LMAuditReport, audit_lm
from eis.audit.report import AuditReport, DetectorResult, ScreenedInput
from eis.audit.run import VERDICT_RULE, audit, decide

__all__ = [
    "VERDICT_RULE",
    "AuditReport",
    "DetectorResult",
    "LMAuditReport",
    "ScreenedInput",
    "audit",
    "audit_lm",
    "build_calibration",
    "decide",
    "load_calibration",
    "save_calibration",
]


class _CallableModule(types.ModuleType):
    """Lets ``eis.audit(...)`` call :func:`audit` while ``eis.audit`` stays the package."""

    def __call__(self, *args: Any, **kwargs: Any) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
