"""The repair-method contract: a model and a clean data budget in, repaired weights of the same model out.

A repair method receives, in one call:

- ``model``: the (possibly trojaned) model, in eval mode. It must not be changed: the method works on a copy.
- ``x``, ``y``: the clean data budget, images (N, C, H, W) in [0, 1] and their true labels (N,). This is
  all the data the method may use (BackdoorBench's default budget: 5% of the training set).
- ``num_classes``: the number of output classes.
- ``detection``: where the method names a detector (:meth:`RepairTool.detector_tool`), that detector's
  :class:`~eis.tools.detection.base.Detection` on the same model and budget, e.g. Neural Cleanse's recovered
  trigger (mask, pattern) and flagged target. Never the truth: the caller runs the detector.

and returns :class:`Repaired`: a new model of the same architecture (same class, same state-dict keys and
shapes, so its weights load back into the user's factory), in eval mode on the input model's device, plus
JSON details (units pruned, epochs run, ...).

A method that needs a detected trigger when the detector found none raises :class:`NotApplicable` (a
:class:`~eis.errors.ToolRefusal`): a benchmark records that as "not applicable", not as a failure, and a
user gets one line saying why.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError, ToolRefusal
from eis.tools.base import Tool, make_tool
from eis.tools.detection.base import Detection, DetectionTool, model_device

FLAG_THRESHOLD = 2.0  # Neural Cleanse's anomaly-index cut-off (Wang et al. 2019)


class NotApplicable(ToolRefusal):
    """The method has nothing to act on (e.g. the detector flagged no trigger); the model is left as it is."""


@dataclasses.dataclass
class Repaired:
    """A repair method's output: the repaired model (same architecture) and JSON-serialisable details."""

    model: nn.Module
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class RepairTool(Tool):
    """Base class for repair methods (family ``repair``); subclasses implement :meth:`_repair`."""

    family: ClassVar[str] = "repair"

    def detector_tool(self) -> DetectionTool | None:
        """The detection tool whose output :meth:`repair` needs, with its settings (None: needs none)."""
        return None

    def repair(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        *,
        detection: Detection | None = None,
    ) -> Repaired:
        """Repair a copy of ``model`` with the clean budget ``(x, y)``; ``model`` itself stays unchanged."""
        x, y = check_budget(model, x, y, num_classes)
        if self.detector_tool() is not None and detection is None:
            raise EisError(
                f"repair method {self.name!r} needs the output of detector "
                f"{self.detector_tool().name!r}; pass detection="  # type: ignore[union-attr]
            )
        work = copy.deepcopy(model).eval()
        for p in work.parameters():
            p.requires_grad_(False)
            p.grad = None
        out = self._repair(work, x, y, num_classes, detection)
        for p in out.model.parameters():
            p.requires_grad_(True)
        out.model.eval()
        return out

    def _repair(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        detection: Detection | None,
    ) -> Repaired:
        """Repair ``model`` (a private copy, eval mode, parameters frozen) in place or return a new one."""
        raise NotImplementedError


def check_budget(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the clean budget; return it as float32 / int64 on the model's device."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise EisError(f"repair: the clean budget must be images shaped (N, C, H, W); got {got}")
    if x.shape[0] == 0:
        raise EisError("repair: the clean data budget is empty (0 inputs); give at least one labelled input")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (x.shape[0],):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise EisError(f"repair: labels must be shaped ({x.shape[0]},) like the inputs; got {got}")
    if y.is_floating_point() or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise EisError(f"repair: labels must be integers in 0..{num_classes - 1}")
    dev = model_device(model)
    return x.detach().to(dev, torch.float32), y.detach().to(dev, torch.long)


def flagged_trigger(detection: Detection | None, method: str, threshold: float = FLAG_THRESHOLD) -> Detection:
    """The detection if it holds a trigger flagged above ``threshold``; else raise :class:`NotApplicable`."""
    if detection is None or detection.mask is None or detection.pattern is None or detection.target is None:
        raise NotApplicable(f"{method}: the detector recovered no trigger, so there is nothing to remove")
    if not detection.score > threshold:
        raise NotApplicable(
            f"{method}: the detector flagged nothing (score {detection.score:.2f} <= {threshold:g}), "
            "so there is no recovered trigger to remove"
        )
    return detection


def neural_cleanse(steps: int, seed: int) -> DetectionTool:
    """The registered Neural Cleanse detector with ``steps`` optimisation steps."""
    tool = make_tool("neural_cleanse", steps=steps, seed=seed)
    assert isinstance(tool, DetectionTool)
    return tool
