"""What every attribution tool shares: input checks, seeding, baselines and superpixel masks.

Bad-input policy (one line, :class:`EisError`):

- ``inputs`` must be a floating (N, C, H, W) tensor with N >= 1 that the model accepts (a channel or
  size mismatch is reported, not passed through as a shape error from deep inside the model);
- ``target`` is an int or an (N,) integer tensor/list with values in [0, num_classes);
- the model and all its submodules must be in eval mode: in train mode BatchNorm mixes the images of a
  batch and dropout is random, so a map would depend on the batch rather than on the image. We refuse
  rather than silently calling ``.eval()``, which would change the caller's model.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import AttributionTool

TargetLike = int | Sequence[int] | torch.Tensor


def check_call(model: nn.Module, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
    """Validate one ``attribute`` call; return the target as an (N,) int64 tensor on the inputs' device."""
    if not isinstance(model, nn.Module):
        raise EisError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise EisError("inputs must be a floating-point tensor shaped (N, C, H, W)")
    if inputs.dim() != 4 or inputs.shape[0] < 1:
        raise EisError(f"inputs must be shaped (N, C, H, W) with N >= 1, got {tuple(inputs.shape)}")
    training = [n or "(model)" for n, m in model.named_modules() if m.training]
    if training:
        raise EisError(f"model is in train mode (e.g. {training[0]}); call model.eval() before attributing")
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != inputs.shape[1]:
        raise EisError(f"inputs have {inputs.shape[1]} channels but the model expects {first.in_channels}")
    key = ("num_classes", tuple(inputs.shape[1:]), inputs.dtype)
    num_classes = cached(model, key, lambda: _probe(model, inputs))
    return check_target(target, inputs.shape[0], num_classes, inputs.device)


def _probe(model: nn.Module, inputs: torch.Tensor) -> int:
    """Run the model on one input: its number of classes, or a one-line error if it cannot run."""
    try:
        with torch.no_grad():
            out = model(inputs[:1])
    except RuntimeError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EisError(f"model cannot run on inputs shaped {tuple(inputs.shape)}: {msg}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise EisError("model must return (N, num_classes) scores")
    return int(out.shape[1])


def spread_channels(maps: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) per-pixel maps as (N, C, H, W), split evenly over the C channels.

    The attribution contract is one map shaped like the input; a method defined per pixel (Grad-CAM,
    the random and blank controls) divides each pixel's value over the channels, so that summing over
    channels (how every track reduces a map) gives the per-pixel value back.
    """
    if maps.dim() == 4:
        maps = maps[:, 0]
    return (maps / channels).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()


def check_target(target: TargetLike, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Normalise ``target`` to an (n,) int64 tensor, checking range and length."""
    t = torch.as_tensor(target, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise EisError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.to(torch.int64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise EisError(f"target has {t.numel()} entries for {n} inputs; give one class per input or one int")
    bad = (t < 0) | (t >= num_classes)
    if bool(bad.any()):
        raise EisError(f"target {int(t[bad][0])} out of range; valid classes are 0..{num_classes - 1}")
    return t.contiguous()


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global torch RNG seeded, restoring the caller's RNG state afterwards.

    Captum's samplers draw from the global torch and NumPy RNGs (GradientShap uses ``np.random``), so
    this is how its stochastic methods become deterministic under a tool's ``seed`` without leaking
    state to the caller.
    """
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(np_state)


def grid_mask(height: int, width: int, cell: int, device: torch.device) -> torch.Tensor:
    """Square superpixels: a (1, 1, H, W) int64 mask numbering ``cell`` x ``cell`` grid cells row-major."""
    rows = torch.arange(height, device=device) // cell
    cols = torch.arange(width, device=device) // cell
    ncols = (width + cell - 1) // cell
    return (rows[:, None] * ncols + cols[None, :]).reshape(1, 1, height, width)


def auto_cell(cell: int, inputs: torch.Tensor) -> int:
    """``cell`` if positive, else the side that gives an 8 x 8 grid (2 px at 16x16, 4 px at 32x32)."""
    if cell < 0:
        raise EisError(f"cell must be >= 0 (0 = automatic), got {cell}")
    return cell or max(1, min(inputs.shape[-2:]) // 8)


def noisy_baselines(inputs: torch.Tensor, n: int, noise: float, seed: int) -> torch.Tensor:
    """``n`` black (zero) baselines, plus Gaussian noise of std ``noise`` when the method needs a spread."""
    shape = (n, *inputs.shape[1:])
    base = torch.zeros(shape, dtype=inputs.dtype, device=inputs.device)
    if noise > 0:
        gen = torch.Generator(device=inputs.device).manual_seed(seed)
        base = base + noise * torch.randn(shape, generator=gen, device=inputs.device, dtype=inputs.dtype)
    return base


class CaptumTool(AttributionTool):
    """Shared ``attribute``: check the call, run ``_attribute`` on detached inputs, return a float map."""

    stochastic: ClassVar[bool] = False  # stochastic tools have a ``seed`` setting and run under seeded()

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        t = check_call(model, inputs, target)
        x = inputs.detach().clone()
        with warnings.catch_warnings():  # Captum's notes on hooks and input gradients are about its internals
            warnings.simplefilter("ignore", UserWarning)
            if self.stochastic:
                with seeded(self.seed, x.device):  # type: ignore[attr-defined]
                    out = self._attribute(model, x, t)
            else:
                out = self._attribute(model, x, t)
        out = out.detach()
        if not out.is_floating_point():
            out = out.float()
        return out

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# Per-model caches: hook-based methods rebuild a private model copy and every call probes the model
# for its number of classes; on the zoo's small models that overhead would exceed the method's own
# cost. Entries are keyed weakly by the model and rebuilt when its modules or tensor objects change.
_Entries = dict[Hashable, tuple[Hashable, Any]]
_CACHE: weakref.WeakKeyDictionary[nn.Module, _Entries] = weakref.WeakKeyDictionary()


def structure(model: nn.Module) -> Hashable:
    """A cheap fingerprint of the model's module tree and of its parameter and buffer objects.

    Objects, not values: the private copies below share the model's tensors, so a change of values is
    seen at once, while a swapped-in parameter or buffer (``module.weight = ...``, ``model.to(device)``
    replacing buffers) changes the fingerprint and rebuilds the copy.
    """
    params = tuple((id(p), p.shape, p.device, p.dtype) for p in model.parameters())
    buffers = tuple((id(b), b.shape, b.device, b.dtype) for b in model.buffers())
    return tuple((n, type(m), id(m)) for n, m in model.named_modules()), params, buffers


def cached(model: nn.Module, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()``'s value for ``model``, rebuilt whenever the model's structure changes."""
    sig = structure(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(key)
    if hit is None or hit[0] != sig:
        hit = (sig, build())
        per_model[key] = hit
    return hit[1]


def shared_copy(model: nn.Module, key: Hashable, build: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """A cached private copy ``build(deepcopy(model))`` holding the model's own parameter and buffer tensors.

    ``build`` may rewrite modules (hooks, activations) but must keep parameter and buffer names. Sharing
    the tensors means the copy never runs on stale weights and costs no copying per call; the copy's
    modules, hooks and graph stay private. Nothing run on a copy may change a tensor in place.
    """

    def make() -> nn.Module:
        net = build(copy.deepcopy(model))
        for kind, named in (("_parameters", model.named_parameters()), ("_buffers", model.named_buffers())):
            for name, tensor in named:
                parent, _, leaf = name.rpartition(".")
                try:
                    owner = net.get_submodule(parent)
                except AttributeError:
                    owner = None
                if owner is None or leaf not in getattr(owner, kind):
                    raise EisError(f"model copy lost the tensor {name!r}; cannot rewrite this model safely")
                getattr(owner, kind)[leaf] = tensor
        return net

    return cached(model, key, make)
