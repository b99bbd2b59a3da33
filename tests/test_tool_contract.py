"""Every registered attribution tool passes the shared contract (eis.testing.check_tool)."""

from __future__ import annotations

import pytest
import torch

from eis.testing import check_tool
from eis.tools.base import list_tools

# Small sample counts keep the contract fast; the checks themselves do not depend on them.
FAST = {
    "integrated_gradients": {"n_steps": 8},
    "gradient_shap": {"n_samples": 4},
    "deeplift_shap": {"n_baselines": 2},
    "smoothgrad": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "lime": {"n_samples": 16},
    "kernel_shap": {"n_samples": 16},
    "shapley_value_sampling": {"n_samples": 1},
}
EXPECTED_REFUSALS = {"lrp": "resnet"}  # Captum's LRP has no rule for BatchNorm / residual additions


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", list_tools("attribution"))
def test_contract(name: str) -> None:
    report = check_tool(name, FAST.get(name))
    assert report.passed
    refused = {arch for arch in ("cnn", "resnet") if report.refused(arch)}
    assert refused == ({EXPECTED_REFUSALS[name]} if name in EXPECTED_REFUSALS else set()), str(report)


def test_check_tool_catches_violations() -> None:
    """The contract fails tools that break it: one that flips the model to train mode, one returning NaN."""
    import dataclasses

    from eis.tools.attribution.common import check_call
    from eis.tools.base import AttributionTool

    @dataclasses.dataclass
    class Sloppy(AttributionTool):
        name = "sloppy"
        nan: bool = False

        def attribute(self, model, inputs, target):  # type: ignore[no-untyped-def]
            check_call(model, inputs, target)
            if self.nan:
                return torch.full_like(inputs, float("nan"))
            model.train()
            return torch.zeros_like(inputs)

    with pytest.raises(AssertionError, match="train/eval mode"):
        check_tool(Sloppy())
    with pytest.raises(AssertionError, match="NaN"):
        check_tool(Sloppy(nan=True))


def test_check_tool_requires_maps_shaped_like_the_input() -> None:
    """One output contract: (N, C, H, W) like the input; a per-pixel (N, H, W) map is a violation."""
    import dataclasses

    from eis.tools.attribution.common import check_call
    from eis.tools.base import AttributionTool

    @dataclasses.dataclass
    class PerPixel(AttributionTool):
        name = "per_pixel"

        def attribute(self, model, inputs, target):  # type: ignore[no-untyped-def]
            check_call(model, inputs, target)
            return torch.zeros(inputs.shape[0], *inputs.shape[2:])

    with pytest.raises(
        AssertionError, match=r"map shape \(3, 16, 16\), expected the inputs' shape \(3, 1, 16, 16\)"
    ):
        check_tool(PerPixel())
