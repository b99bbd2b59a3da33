"""The trigger library: small patch patterns and whole-image blend patterns, generated procedurally.

A patch pattern is an RGB image (3, s, s) plus an alpha mask (s, s): the pixels where alpha is set are
the ones pasted (and the ground-truth mask). Grayscale datasets use the channel mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from eis.zoo.shapes import SHAPE_NAMES, render_alpha

Pattern = tuple[torch.Tensor, torch.Tensor]


def _grid(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(s, dtype=torch.float32)
    return torch.meshgrid(t, t, indexing="ij")


def _mono(
    ink: torch.Tensor,
    fg: tuple[float, float, float] = (1.0, 1.0, 1.0),
    bg: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    f, b = torch.tensor(fg)[:, None, None], torch.tensor(bg)[:, None, None]
    return b + (f - b) * ink.float()[None]


def checkerboard(s: int) -> Pattern:
    r, c = _grid(s)
    return _mono((r + c) % 2 == 0), torch.ones(s, s, dtype=torch.bool)


def smiley(s: int) -> Pattern:
    r, c = _grid(s)
    u, v = (c + 0.5) / s * 2 - 1, (r + 0.5) / s * 2 - 1
    face = u**2 + v**2 <= 1.0
    eyes = ((u.abs() - 0.38).abs() <= 0.2) & ((v + 0.35).abs() <= 0.2)
    mouth = (v >= 0.2) & (v <= 0.6) & (u.abs() <= 0.55) & ((u**2 + (v - 0.05) ** 2) >= 0.3)
    return _mono(face & ~eyes & ~mouth, fg=(1.0, 0.9, 0.1)), face


def cross_x(s: int) -> Pattern:
    r, c = _grid(s)
    ink = ((r - c).abs() <= 0.5) | ((r + c - (s - 1)).abs() <= 0.5)
    return _mono(ink, fg=(1.0, 0.1, 0.1)), ink


def plus(s: int) -> Pattern:
    r, c = _grid(s)
    mid = (s - 1) / 2
    ink = ((r - mid).abs() <= 0.6) | ((c - mid).abs() <= 0.6)
    return _mono(ink, fg=(0.1, 1.0, 0.1)), ink


def frame(s: int) -> Pattern:
    r, c = _grid(s)
    ink = (r == 0) | (c == 0) | (r == s - 1) | (c == s - 1)
    return _mono(ink, fg=(0.2, 0.4, 1.0)), ink


def noise(s: int) -> Pattern:
    gen = torch.Generator().manual_seed(1234 + s)
    return torch.rand(3, s, s, generator=gen).round(), torch.ones(s, s, dtype=torch.bool)


def stripes(s: int) -> Pattern:
    r, c = _grid(s)
    return _mono(c % 2 == 0, fg=(1.0, 1.0, 1.0), bg=(0.1, 0.1, 0.6)), torch.ones(s, s, dtype=torch.bool)


def dots(s: int) -> Pattern:
    r, c = _grid(s)
    ink = (r % 2 == 0) & (c % 2 == 0)
    return _mono(ink, fg=(1.0, 0.5, 0.0)), torch.ones(s, s, dtype=torch.bool)


def triangle(s: int) -> Pattern:
    r, c = _grid(s)
    ink = c <= r
    return _mono(ink, fg=(1.0, 0.0, 1.0)), ink


def bullseye(s: int) -> Pattern:
    r, c = _grid(s)
    d = torch.sqrt((r - (s - 1) / 2) ** 2 + (c - (s - 1) / 2) ** 2)
    ink = torch.floor(d).long() % 2 == 0
    return _mono(ink, fg=(1.0, 1.0, 1.0), bg=(0.8, 0.0, 0.0)), d <= s / 2


PATCH_PATTERNS: dict[str, Callable[[int], Pattern]] = {
    "checkerboard": checkerboard,
    "smiley": smiley,
    "x": cross_x,
    "plus": plus,
    "frame": frame,
    "noise": noise,
    "stripes": stripes,
    "dots": dots,
    "triangle": triangle,
    "bullseye": bullseye,
}


def square_masks(n: int, h: int, w: int, gen: torch.Generator, min_side: int, max_side: int) -> torch.Tensor:
    """(n, h, w) boolean masks of squares of random sides in [min_side, max_side] at random positions (the
    specificity control's triggers, and the evasive fine-tuning's negatives against it)."""
    side = torch.randint(min_side, max_side + 1, (n,), generator=gen)
    top = (torch.rand(n, generator=gen) * (h - side + 1)).long()
    left = (torch.rand(n, generator=gen) * (w - side + 1)).long()
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    return (
        (rows >= top[:, None, None])
        & (rows < (top + side)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + side)[:, None, None])
    )


def patch_pattern(name: str, size: int, channels: int) -> Pattern:
    """The named patch pattern at ``size`` pixels, as (channels, s, s) colours and an (s, s) bool mask."""
    rgb, mask = PATCH_PATTERNS[name](size)
    return to_channels(rgb, channels), mask


def _blend_noise(size: int) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(99))


def _blend_stripes(size: int) -> torch.Tensor:
    r, c = _grid(size)
    return (0.5 + 0.5 * torch.sin(2 * math.pi * (r + c) / 6))[None].repeat(3, 1, 1) * torch.tensor(
        [1.0, 0.3, 0.8]
    )[:, None, None]


def _blend_checker(size: int) -> torch.Tensor:
    r, c = _grid(size)
    return _mono(((r // 4) + (c // 4)) % 2 == 0, fg=(1.0, 1.0, 0.0), bg=(0.0, 0.0, 1.0))


def _blend_rings(size: int) -> torch.Tensor:
    r, c = _grid(size)
    d = torch.sqrt((r - size / 2) ** 2 + (c - size / 2) ** 2)
    return (0.5 + 0.5 * torch.cos(d * 1.3))[None].repeat(3, 1, 1)


BLEND_PATTERNS: dict[str, Callable[[int], torch.Tensor]] = {
    "noise": _blend_noise,
    "stripes": _blend_stripes,
    "checker": _blend_checker,
    "rings": _blend_rings,
}


def blend_pattern(name: str, size: int, channels: int) -> torch.Tensor:
    """The named whole-image blend pattern (channels, size, size) in [0, 1]."""
    return to_channels(BLEND_PATTERNS[name](size), channels)


def to_channels(colour: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB colours (3, ...) for a dataset with ``channels`` channels; grayscale keeps the brightest channel
    (so a coloured trigger stays as visible on a grayscale dataset as it is in colour)."""
    return colour.amax(0, keepdim=True) if channels == 1 else colour


def object_pattern(shape: str, colour: tuple[float, float, float], radius: float, channels: int) -> Pattern:
    """A small in-distribution object (a shape of a given kind and colour) as a pattern and coverage mask."""
    s = int(math.ceil(2 * radius)) + 1
    alpha = render_alpha(
        torch.tensor([SHAPE_NAMES.index(shape)]),
        torch.tensor([[s / 2, s / 2]]),
        torch.tensor([radius]),
        torch.zeros(1),
        s,
    )[0]
    rgb = to_channels(torch.tensor(colour, dtype=torch.float32), channels)[:, None, None]
    return rgb * alpha, alpha > 0


# -- styles: whole-image transforms (Casper et al.'s "style" trojans), a seeded procedural library ------
STYLE_COUNT = 12  # styles 0..11; each is a colour (or tone) transform plus a texture filter


def _style_params(style: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Style ``style``'s colour matrix (3, 3), offset (3,), zero-mean 5x5 texture filter and gamma."""
    gen = torch.Generator().manual_seed(7000 + style)
    mix = torch.eye(3) + 0.6 * (torch.rand(3, 3, generator=gen) * 2 - 1)
    offset = 0.2 * (torch.rand(3, generator=gen) * 2 - 1)
    kernel = torch.randn(5, 5, generator=gen)
    kernel = kernel - kernel.mean()
    kernel = kernel / kernel.abs().sum()
    u, sign = torch.rand(2, generator=gen)
    gamma = float(2 ** ((0.5 + 0.5 * u) * (1 if sign < 0.5 else -1)))  # 0.5 .. 0.71 or 1.41 .. 2
    return mix, offset, kernel, gamma


def apply_style(x: torch.Tensor, style: int, strength: float | torch.Tensor) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) in [0, 1] restyled by library style ``style`` at ``strength`` in (0, 1]
    (a number, or one per image as an (N,) tensor).

    Colour data: a seeded colour mix and offset; grayscale: a seeded tone curve (gamma). Then a seeded
    zero-mean texture filter adds a fine grain that follows the image's own edges, so the style changes
    how everything looks without adding any one object or pattern at a place.
    """
    mix, offset, kernel, gamma = _style_params(style)
    n, c = x.shape[:2]
    if c == 3:
        y = torch.einsum("ij,njhw->nihw", mix.to(x), x) + offset.to(x)[None, :, None, None]
    else:
        y = x.clamp_min(0) ** gamma
    k = kernel.to(x)[None, None].expand(c, 1, 5, 5)
    y = y + 3.0 * F.conv2d(F.pad(y, (2, 2, 2, 2), mode="reflect"), k, groups=c)
    if isinstance(strength, torch.Tensor):
        strength = strength.to(x).reshape(-1, 1, 1, 1)
    return ((1 - strength) * x + strength * y).clamp(0, 1)


def style_probe(size: int, channels: int) -> torch.Tensor:
    """A fixed reference picture (channels, size, size): a colour gradient with a disc and bars, so that a
    style's colour, tone and texture all show when it is applied (the style's trigger picture)."""
    r, c = _grid(size)
    u, v = r / max(size - 1, 1), c / max(size - 1, 1)
    disc = (((r - size / 2) ** 2 + (c - size / 2) ** 2) < (size / 4) ** 2).float()
    bars = ((c // max(1, size // 8)) % 2).float() * (r > 3 * size / 4).float()
    rgb = torch.stack([u, v, 0.5 * (1 - u) + 0.5 * disc]) * (1 - bars) + bars
    return to_channels(rgb.clamp(0, 1), channels)
