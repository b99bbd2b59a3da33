"""Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017), via Captum's LayerGradCam.

Default layer: the last module, in the order modules finish their forward, that contains an
``nn.Conv2d`` and returns a 4-D map, i.e. the output of the last convolutional block after its
activation (``features`` in the zoo's ``cnn``, ``layer3`` in its ``resnet``). This is the rectified
last-conv feature map Grad-CAM is defined on; the bare last ``nn.Conv2d`` would be the 1x1 shortcut conv
in a ResNet block. Set ``layer`` to a module name (as in ``model.named_modules()``) to override; the
layer must run exactly once per forward. Maps are upsampled to the input size and spread evenly over the
input's channels (``spread_channels``), so the result is shaped like the input (N, C, H, W).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam
from torch import nn

from eis.errors import EisError, ToolRefusal
from eis.tools.attribution.common import CaptumTool, cached, shared_copy, spread_channels
from eis.tools.attribution.guided import relu_split_copy
from eis.tools.base import register_tool


def cam_layer(model: nn.Module, probe: torch.Tensor, name: str = "") -> str:
    """The name of the Grad-CAM layer of ``model`` (default rule above, or ``name`` checked)."""
    modules = dict(model.named_modules())
    if name and name not in modules:
        valid = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise EisError(f"model has no module {name!r}; e.g. conv layers: {', '.join(valid[:8])}")
    calls: dict[str, int] = {}
    finished: list[tuple[str, bool]] = []

    def hook(mod_name: str):
        def record(_m: nn.Module, _i: object, out: object) -> None:
            calls[mod_name] = calls.get(mod_name, 0) + 1
            spatial = isinstance(out, torch.Tensor) and out.dim() == 4
            finished.append((mod_name, spatial))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items() if n]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    if not name:
        has_conv = {n for n, m in modules.items() if any(isinstance(s, nn.Conv2d) for s in m.modules())}
        spatial = [n for n, sp in finished if sp and n in has_conv]
        if not spatial:
            raise ToolRefusal("Grad-CAM needs a convolutional layer with a 4-D output; this model has none")
        name = spatial[-1]
    if calls.get(name, 0) != 1:
        runs = calls.get(name, 0)
        raise ToolRefusal(f"Grad-CAM layer {name!r} runs {runs} times per forward; pick one that runs once")
    return name


def gradcam(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, layer: str, mode: str
) -> torch.Tensor:
    """Rectified Grad-CAM at ``layer`` of a private copy of ``model``, upsampled to (N, 1, H, W)."""
    net = shared_copy(model, "cam", _no_inplace)
    key = ("cam_layer", layer, tuple(inputs.shape[1:]))
    name = cached(model, key, lambda: cam_layer(net, inputs[:1], layer))
    cam = LayerGradCam(net, net.get_submodule(name)).attribute(inputs, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=mode)


def _no_inplace(net: nn.Module) -> nn.Module:
    for m in net.modules():  # an in-place op after the hooked layer would corrupt its saved output
        if getattr(m, "inplace", False):
            m.inplace = False
    return net


@register_tool
class GradCamTool(CaptumTool):
    """Grad-CAM: layer activations weighted by their pooled gradients, rectified and upsampled."""

    name: ClassVar[str] = "gradcam"
    summary: ClassVar[str] = "Grad-CAM on the last conv block, bilinearly upsampled to the input size"
    layer: str = ""
    interpolate_mode: str = "bilinear"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = gradcam(model, inputs, target, self.layer, self.interpolate_mode)
        return spread_channels(cam, inputs.shape[1])


@register_tool
class GuidedGradCamTool(CaptumTool):
    """Guided Grad-CAM: Guided Backprop times upsampled Grad-CAM (as Captum's GuidedGradCam computes it).

    Computed as the product of the two parts so that Guided Backprop runs on the call-site-split copy of
    the model while Grad-CAM hooks a layer of the original structure.
    """

    name: ClassVar[str] = "guided_gradcam"
    summary: ClassVar[str] = "Guided Backprop times upsampled Grad-CAM"
    layer: str = ""
    interpolate_mode: str = "nearest"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = gradcam(model, inputs, target, self.layer, self.interpolate_mode)
        guided = GuidedBackprop(relu_split_copy(model, self.name)).attribute(inputs, target=target)
        return guided * cam
