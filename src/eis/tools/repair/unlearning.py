"""Neural Cleanse unlearning (Wang et al., S&P 2019, sec. VI-C).

Fine-tune on the clean budget in which a share of the inputs (the paper: 20%) carry the trigger that Neural
Cleanse *recovered* (never the true one), labelled with their true class, so the model unlearns the
trigger -> target shortcut. Needs the ``neural_cleanse`` detector's output; when Neural Cleanse flags no
class (anomaly index <= 2) there is no trigger to unlearn and the method is not applicable.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from eis.tools.base import register_tool
from eis.tools.detection.base import Detection, DetectionTool
from eis.tools.repair.base import FLAG_THRESHOLD, Repaired, flagged_trigger, neural_cleanse
from eis.tools.repair.finetune import _FinetuneSettings


@register_tool
class NCUnlearning(_FinetuneSettings):
    """Unlearn Neural Cleanse's recovered trigger: fine-tune on clean + stamped inputs with true labels."""

    name: ClassVar[str] = "nc_unlearning"
    summary: ClassVar[str] = "fine-tune on inputs stamped with the recovered trigger, true labels (Wang 2019)"

    stamp_fraction: float = 0.2
    nc_steps: int = 100
    threshold: float = FLAG_THRESHOLD

    def detector_tool(self) -> DetectionTool:
        return neural_cleanse(self.nc_steps, self.seed)

    def _repair(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, detected: Detection | None
    ) -> Repaired:
        det = flagged_trigger(detected, self.name, self.threshold)
        steps = self._finetune(model, x, y, stamp=det.stamp, stamp_fraction=self.stamp_fraction)
        return Repaired(model, {"steps": steps, "target": int(det.target)})  # type: ignore[arg-type]
