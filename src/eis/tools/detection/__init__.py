"""Trojan detectors (family ``detection``): is a model trojaned, which class is the target, what trigger?"""

from eis.tools.detection.base import Detection, DetectionTool

__all__ = ["Detection", "DetectionTool"]
