"""Model parameter randomisation for the sanity checks of Adebayo et al. (2018).

Layers are the modules that own parameters directly (convolutions, linear layers, BatchNorm affine
parameters), in the order the forward pass first calls them; the *top* layer is the last one (the logits).

- cascading: randomise the top k layers, k = 1 .. L (top down), the paper's main experiment;
- independent: randomise one layer at a time, all others keep their trained weights.

Randomisation always works on a deep copy. Each parameter is redrawn from a normal distribution truncated
at two standard deviations, with the mean and standard deviation of the trained tensor: the layer keeps
its scale, so a randomised layer neither silences nor blows up the signal, and a map that changes does so
because the weights lost their meaning, not their magnitude. Draws are seeded per (seed, layer, parameter)
name, so the top layer gets the same random weights in every cascading step and in the independent run.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from eis.errors import EisError


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[list[str], dict[str, int]]:
    """Parameterised modules in first-call order, and the number of dims of each one's output."""
    order: list[str] = []
    out_dims: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue

        def record(mod: nn.Module, args: object, output: object, name: str = name) -> None:
            if name not in out_dims:
                order.append(name)
                out_dims[name] = output.ndim if isinstance(output, torch.Tensor) else 0

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise EisError("model has no parameterised layer to randomise")
    return order, out_dims


def parameterised_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules owning parameters, in first-call order of a forward pass on ``example[:1]``.

    Modules that own parameters but are never called (they cannot affect the output) are left out. A
    module's place is the moment its forward returns, which for a leaf module is the order it is called.
    """
    return _trace(model, example)[0]


def head_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The head: the parameterised layers after the last one with a spatial (N, C, H, W) output.

    The classifier part of a conv net (a SmallCNN's two linear layers, a ResNet's ``fc``); at least the
    top layer. Returned in forward order.
    """
    order, dims = _trace(model, example)
    spatial = [i for i, name in enumerate(order) if dims[name] >= 4]
    start = spatial[-1] + 1 if spatial else 0
    return order[min(start, len(order) - 1) :]


def _seed_for(seed: int, param_name: str) -> int:
    return zlib.crc32(f"{seed}:{param_name}".encode())


def _truncated_normal(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """Standard normal truncated to [-2, 2], by the inverse CDF of a uniform draw (no rejection loop)."""
    lo = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    u = lo + (1 - 2 * lo) * torch.rand(shape, generator=g, dtype=torch.float64)
    return math.sqrt(2) * torch.erfinv(2 * u - 1)


@torch.no_grad()
def randomize_layers(model: nn.Module, layers: Sequence[str], *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with the parameters of the named ``layers`` redrawn (see the module doc)."""
    out = copy.deepcopy(model)
    for layer in layers:
        try:
            module = out.get_submodule(layer)
        except AttributeError:
            raise EisError(f"model has no layer {layer!r}") from None
        for pname, p in module.named_parameters(recurse=False):
            g = torch.Generator().manual_seed(_seed_for(seed, f"{layer}.{pname}"))
            flat = p.detach().to(torch.float64).flatten()
            mean = float(flat.mean())
            std = float(flat.std()) if flat.numel() > 1 else 0.0
            if not std > 0:
                std = max(abs(mean), 1e-2)
            p.copy_((mean + std * _truncated_normal(p.shape, g)).to(device=p.device, dtype=p.dtype))
    return out


def cascading(model: nn.Module, layers: Sequence[str], *, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield (layer, model with that layer and all layers above it randomised), from the top layer down."""
    for k in range(1, len(layers) + 1):
        yield layers[-k], randomize_layers(model, layers[-k:], seed=seed)


def independent(model: nn.Module, layers: Sequence[str], *, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield (layer, model with only that layer randomised), from the top layer down."""
    for layer in reversed(layers):
        yield layer, randomize_layers(model, [layer], seed=seed)


def top_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The *top layers* of the sanity verdict: the top half of the parameterised layers (rounded up), and
    at least the head. A SmallCNN: its last conv and two linear layers; a ResNet: layer3 and ``fc`` and
    the last BatchNorm of layer2. Returned in forward order.
    """
    layers = parameterised_layers(model, example)
    k = max(len(head_layers(model, example)), math.ceil(len(layers) / 2))
    return layers[-k:]
