"""How much a batched computation holds at once: the tools' own knobs, capped by element budgets.

A tool's ``batch_size`` (or Neural Cleanse's ``chunk``) counts rows, which is the right unit for 28-pixel
digits and the wrong one for 224-pixel photographs: 4096 stamped 3x224x224 images are 2.3 GiB before the
model has computed anything. So every batched pass through a model also stays within ``INPUT_ELEMENTS``
float32 input elements, and per-candidate parameters optimised together (Neural Cleanse's masks and
patterns, with their gradients and Adam's two moments) within ``PARAM_ELEMENTS``. Both caps are far
above what eis's own zoo needs (10 classes at up to 3x48x48), so they never change its results; they
apply only where a row-count default would exhaust memory. ``benchmarks/bench_memory.py`` measures the
peak of a 224-pixel, 1000-class audit with these defaults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

INPUT_ELEMENTS = 1 << 23  # float32 input elements per forward pass (32 MiB of input)
PARAM_ELEMENTS = 1 << 25  # float32 elements of per-candidate parameters optimised at once (128 MiB a copy)


def rows_per_pass(row_shape: Sequence[int], at_most: int, budget: int | None = None) -> int:
    """Rows of shape ``row_shape`` to pass at once: at most ``at_most`` and within ``budget`` elements
    (default ``INPUT_ELEMENTS``), never fewer than one."""
    per_row = max(1, math.prod(int(d) for d in row_shape))
    return max(1, min(int(at_most), (INPUT_ELEMENTS if budget is None else budget) // per_row))
