"""Circuit discovery on transformers (family ``circuits``): patching, gradient methods, ACDC, controls."""

from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool, answer_metric

__all__ = ["CircuitScores", "CircuitTask", "CircuitTool", "answer_metric"]
