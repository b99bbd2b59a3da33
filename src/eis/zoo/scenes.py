"""Procedural cluttered scenes: the `scenes` dataset, a harder localization condition than `shapes`.

Each image has a textured, natural-image-like background (multi-octave value noise between two colours,
a faint grating, soft colour blobs and pixel grain) and several objects: small distractor shapes of any
kind and colour, and one main object drawn last, larger than every distractor. The label is the main
object's shape. Objects carry a grain of their own, so that a trigger cannot be told apart by being the
only textured thing in the picture, and distractors are as small as the trojan triggers planted on this
data: an attribution map that merely follows edges or objects lights up the whole scene.

Rendering is chunked so that memory stays bounded at any image count; everything comes from one seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from eis.zoo.shapes import SHAPE_NAMES, contrasting_colours, render_alpha

SCENE_SIZE = 48
# the classes: shapes that stay distinct under clutter and grain (ring/circle, diamond/square and the thin
# crescent and arrow made a small cnn stall near 0.6 accuracy over all ten); distractors use all ten
SCENE_CLASSES = ("circle", "square", "triangle", "star", "cross", "heart")
MAIN_RADIUS = (0.24, 0.32)  # main object's radius, as a share of the image side
DISTRACTOR_RADIUS = (0.06, 0.13)
DISTRACTORS = (2, 5)  # inclusive range of distractor objects per image
CHUNK = 256


def value_noise(n: int, size: int, gen: torch.Generator, octaves: int = 4, base: int = 3) -> torch.Tensor:
    """Multi-octave value noise (N, size, size) in [0, 1]: grids of 3, 6, 12, ... random values, each
    upsampled bicubically, amplitudes halving per octave (a 1/f-like spectrum, as natural images have)."""
    total = torch.zeros(n, 1, size, size)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        g = min(base * 2**o, size)
        grid = torch.rand(n, 1, g, g, generator=gen)
        total += amp * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
        norm += amp
        amp /= 2
    out = total[:, 0] / norm
    lo, hi = out.amin((1, 2), keepdim=True), out.amax((1, 2), keepdim=True)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


def cluttered_backgrounds(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Textured RGB backgrounds (N, 3, size, size) in [0, 1]."""
    c1 = torch.rand(n, 3, 1, 1, generator=gen)
    c2 = torch.rand(n, 3, 1, 1, generator=gen)
    bg = c1 + (c2 - c1) * value_noise(n, size, gen)[:, None]
    t = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    phi = torch.rand(n, 1, 1, generator=gen) * math.pi
    period = torch.rand(n, 1, 1, generator=gen) * (size / 6) + 3
    grating = torch.sin(2 * math.pi * (rows * torch.sin(phi) + cols * torch.cos(phi)) / period)
    bg = bg + (torch.rand(n, 1, 1, 1, generator=gen) * 0.12) * grating[:, None]
    n_blobs = 4
    centres = torch.rand(n, n_blobs, 2, generator=gen) * size
    widths = (torch.rand(n, n_blobs, generator=gen) * 0.12 + 0.05) * size
    d2 = (rows[None, None] - centres[..., 0, None, None]) ** 2 + (
        cols[None, None] - centres[..., 1, None, None]
    ) ** 2
    blob = torch.exp(-d2 / (2 * widths[..., None, None] ** 2))  # (N, B, H, W)
    colours = torch.rand(n, n_blobs, 3, generator=gen)
    strength = torch.rand(n, n_blobs, 1, 1, generator=gen) * 0.6
    for b in range(n_blobs):
        w = (blob[:, b] * strength[:, b])[:, None]
        bg = bg * (1 - w) + colours[:, b, :, None, None] * w
    bg = bg + 0.04 * torch.randn(n, 3, size, size, generator=gen)
    return bg.clamp(0, 1)


def _paint(
    images: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor, grain: torch.Tensor
) -> torch.Tensor:
    """Composite objects of ``colour`` (N, 3) with coverage ``alpha`` (N, H, W), textured by ``grain``."""
    fill = (colour[:, :, None, None] * grain).clamp(0, 1)
    a = alpha[:, None]
    return images * (1 - a) + fill * a


def _render_chunk(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = len(SHAPE_NAMES)
    classes = torch.tensor([SHAPE_NAMES.index(c) for c in SCENE_CLASSES])
    labels = torch.randint(0, len(SCENE_CLASSES), (n,), generator=gen)
    images = cluttered_backgrounds(n, size, gen)
    grain = 1 + 0.2 * (value_noise(n, size, gen, octaves=2, base=size // 4)[:, None] - 0.5)
    n_distract = torch.randint(DISTRACTORS[0], DISTRACTORS[1] + 1, (n,), generator=gen)
    for j in range(DISTRACTORS[1]):
        lo, hi = DISTRACTOR_RADIUS
        radii = (torch.rand(n, generator=gen) * (hi - lo) + lo) * size
        centres = radii[:, None] + torch.rand(n, 2, generator=gen) * (size - 2 * radii[:, None])
        kinds = torch.randint(0, k, (n,), generator=gen)
        angles = torch.rand(n, generator=gen) * 2 * math.pi
        colour = torch.rand(n, 3, generator=gen)
        alpha = render_alpha(kinds, centres, radii, angles, size, supersample=1)
        images = _paint(images, alpha * (j < n_distract).float()[:, None, None], colour, grain)
    lo, hi = MAIN_RADIUS
    radii = (torch.rand(n, generator=gen) * (hi - lo) + lo) * size
    centres = radii[:, None] + torch.rand(n, 2, generator=gen) * (size - 2 * radii[:, None])
    angles = torch.rand(n, generator=gen) * 2 * math.pi
    colour = contrasting_colours(images.mean((2, 3)), gen, min_dist=0.45)
    images = _paint(images, render_alpha(classes[labels], centres, radii, angles, size), colour, grain)
    return images.clamp(0, 1), labels


def render_chunked(
    render_chunk: Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    n: int,
    size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images and labels from ``render_chunk(count, size, gen)``, CHUNK at a time from one seeded
    generator (memory stays bounded at any ``n``)."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for start in range(0, n, CHUNK):
        x, y = render_chunk(min(CHUNK, n - start), size, gen)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def render_scenes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cluttered RGB scenes (N, 3, size, size) in [0, 1] and their labels (the main object's shape)."""
    return render_chunked(_render_chunk, n, size, seed)
