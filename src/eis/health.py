"""Is a user's model fit to be audited or repaired? Checks that refuse a broken model before any verdict.

A detector run on a broken model answers calmly and wrongly: a network whose weights are all NaN gives
NaN logits, every detector's optimisation goes nowhere, and an audit would call it "no evidence". So the
audit and the repair first run the model on the clean examples and refuse (:class:`ModelRefused`, one line,
exit 2 from the CLI) when

- any output is not finite (NaN or infinite);
- the output does not depend on the input (the same logits for every example);
- its clean accuracy is not above chance: a one-sided binomial test of the correct count against the
  share of the most common label (what a model that ignores its input scores) at ``CHANCE_ALPHA``.

Each refusal names what was measured and what to check.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from eis.batching import rows_per_pass
from eis.errors import EisError
from eis.usermodel import device_of

CHANCE_ALPHA = 0.01  # refuse when clean accuracy is not above chance at this significance level
SAME_OUTPUT_RTOL = 1e-6  # outputs equal for every input within this share of their magnitude


class ModelRefused(EisError):
    """The model cannot be audited or repaired (broken outputs, input ignored, accuracy at chance)."""


@dataclasses.dataclass(frozen=True)
class Health:
    """What the checks measured on the clean examples."""

    n: int
    accuracy: float
    chance: float
    p_value: float  # P(accuracy this high | a model at chance)


def check_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, what: str = "audited", batch_size: int = 256
) -> Health:
    """Run ``model`` (eval mode) on the clean examples; raise :class:`ModelRefused` if it is broken.

    ``what`` completes "cannot be ..." in the message (``audited``, ``repaired``).
    """
    from scipy.stats import binomtest

    dev = device_of(model)
    batch_size = rows_per_pass(x.shape[1:], batch_size)
    with torch.no_grad():
        logits = torch.cat(
            [model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        )
    n = int(x.shape[0])
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        params = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters() if p.is_floating_point())
        where = f"; {params} of its parameters are NaN or infinite" if params else ""
        raise ModelRefused(
            f"the model cannot be {what}: its outputs are NaN or infinite on {bad} of {n} clean examples"
            f"{where}; check the weights file and the input normalisation"
        )
    spread = float((logits - logits[:1]).abs().max())
    if n > 1 and spread <= SAME_OUTPUT_RTOL * (1.0 + float(logits.abs().max())):
        raise ModelRefused(
            f"the model cannot be {what}: it gives the same output for all {n} clean examples (it ignores "
            "its input); check the weights file and that the model is in eval mode"
        )
    y = y.cpu()
    correct = int((logits.argmax(1) == y).sum())
    chance = float(torch.bincount(y).max()) / n
    p = float(binomtest(correct, n, chance, alternative="greater").pvalue) if chance < 1 else 1.0
    if p > CHANCE_ALPHA:
        raise ModelRefused(
            f"the model cannot be {what}: its clean accuracy {correct / n:.3f} on {n} examples is not above "
            f"chance ({chance:.3f}, the most common label's share; binomial p = {p:.2g}); check that the "
            "labels follow the model's class order and that the data is normalised as in training"
        )
    return Health(n=n, accuracy=correct / n, chance=chance, p_value=p)
