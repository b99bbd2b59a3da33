"""The feature-synthesis contract: from a model and a target class, images meant to show what drives it.

A synthesis tool never sees a trigger. ``synthesize(model, target, clean_inputs)`` returns a fixed number
``n_images`` (default 10, the 2024 competition format) of images (K, C, H, W) in [0, 1], shaped like the
clean inputs, on their device. ``clean_inputs`` are held-out clean images of the model's domain (methods
that paste patches need them; others may ignore them). Two optional keywords: ``labels`` of those inputs
(the class-mean control uses them; without them it uses the model's predictions) and ``dataset``, the
name of the model's domain, which lets the feature-level adversary use that dataset's generator.

Also here: :func:`paste`, a differentiable, batched "paste a patch with random position, scale and
rotation" (Brown et al.'s expectation over transformations), shared by the patch-based tools.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.cache import Prep
from eis.errors import EisError
from eis.tools.base import Tool


class SynthesisTool(Tool):
    """Base class for feature-synthesis tools (family ``synthesis``); each has an ``n_images`` setting."""

    family: ClassVar[str] = "synthesis"

    def synthesize(
        self,
        model: nn.Module,
        target: int,
        clean_inputs: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        dataset: str | None = None,
    ) -> torch.Tensor:
        """``n_images`` images (K, C, H, W) in [0, 1] meant to reveal what drives class ``target``.

        Checks the call once for every tool, then runs the tool's ``_synthesize``.
        """
        num_classes = check_call(model, target, clean_inputs, self.n_images)
        context = SynthesisContext(num_classes=num_classes, labels=labels, dataset=dataset)
        return self._synthesize(model, target, clean_inputs, context)

    def _synthesize(
        self, model: nn.Module, target: int, clean_inputs: torch.Tensor, context: SynthesisContext
    ) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, dataset: str | None) -> list[Prep]:
        """Cached one-off work a call with ``dataset`` will need (default: none), e.g. a generator; the
        benchmark runner does it ahead of the cells (:class:`eis.cache.Prep`)."""
        return []


@dataclasses.dataclass(frozen=True)
class SynthesisContext:
    """What a checked synthesize call knows besides model, target and inputs."""

    num_classes: int
    labels: torch.Tensor | None = None  # labels of the clean inputs, where the caller has them
    dataset: str | None = None  # the model's domain (lets the feature-level adversary pick its generator)


def check_call(model: nn.Module, target: int, clean_inputs: torch.Tensor, n_images: int) -> int:
    """Validate a synthesize call; returns the model's number of classes."""
    if not isinstance(clean_inputs, torch.Tensor) or clean_inputs.ndim != 4 or clean_inputs.shape[0] == 0:
        shape = tuple(clean_inputs.shape) if isinstance(clean_inputs, torch.Tensor) else type(clean_inputs)
        raise EisError(f"clean_inputs must be a non-empty (N, C, H, W) tensor; got {shape}")
    if not isinstance(n_images, int) or n_images < 1:
        raise EisError(f"n_images must be a positive integer; got {n_images!r}")
    with torch.no_grad():
        num_classes = int(model(clean_inputs[:1].to(device_of(model), torch.float32)).shape[1])
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
        raise EisError(
            f"target {target!r} is not a class of this model; valid: integers 0..{num_classes - 1}"
        )
    return num_classes


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def affine_params(
    n: int, gen: torch.Generator, scale: tuple[float, float], rotation: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random side fractions (n,), rotations (n,) in radians and centres (n, 2) in [-1, 1] coordinates;
    centres keep the (unrotated) square inside the image."""
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    a = (torch.rand(n, generator=gen) * 2 - 1) * rotation
    c = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - s.clamp(max=1.0))[:, None]
    return s.to(device), a.to(device), c.to(device)


def paste(
    x: torch.Tensor,
    patch: torch.Tensor,
    side: torch.Tensor,
    angle: torch.Tensor,
    centre: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paste ``patch`` (N, C, p, p) onto ``x`` (N, C, H, W), differentiably in the patch.

    ``side`` (N,) is the patch side as a fraction of the image side, ``angle`` (N,) its rotation in
    radians, ``centre`` (N, 2) its centre (x, y) in [-1, 1] image coordinates; ``alpha`` (N, 1, p, p) an
    optional opacity mask (default: the whole square). One affine grid per image, one ``grid_sample``.
    """
    n = x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel (u, v) -> patch coordinate R(-a) (u - c) / side.
    theta = torch.stack(
        [
            torch.stack([cos / side, sin / side, -(cos * centre[:, 0] + sin * centre[:, 1]) / side], 1),
            torch.stack([-sin / side, cos / side, (sin * centre[:, 0] - cos * centre[:, 1]) / side], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if alpha is None:
        alpha = torch.ones(n, 1, *patch.shape[-2:], device=x.device, dtype=x.dtype)
    both = torch.cat([patch, alpha], 1)
    warped = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    img, m = warped[:, :-1], warped[:, -1:]
    return x * (1 - m) + img * m


def draw_inputs(clean_inputs: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` clean inputs drawn with replacement (indices from ``gen``), on the inputs' device."""
    idx = torch.randint(0, clean_inputs.shape[0], (n,), generator=gen)
    return clean_inputs[idx.to(clean_inputs.device)]


def upsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize to ``size``: a small patch shown pixel for pixel at the image's size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="nearest")
