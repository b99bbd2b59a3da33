"""Procedural shape rendering, vectorised in torch: the `shapes` dataset and the `natural` trojan use it.

Each shape is an implicit function of local coordinates (u, v) in units of the shape's radius, so one
rendering path handles any size, position and rotation; anti-aliasing comes from 2x supersampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Inside = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _polygon(n: int, apothem: float, phase: float = -math.pi / 2) -> Inside:
    """Regular n-gon as an intersection of half-planes."""
    angles = [phase + math.pi / n + 2 * math.pi * k / n for k in range(n)]

    def inside(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        proj = torch.stack([u * math.cos(a) + v * math.sin(a) for a in angles])
        return proj.amax(0) <= apothem

    return inside


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    theta = torch.atan2(v, u) + math.pi / 2
    frac = torch.remainder(theta * 5 / (2 * math.pi), 1.0)
    radius = 0.38 + 0.62 * (1 - 2 * frac).abs()
    return torch.sqrt(u**2 + v**2) <= radius


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    lobes = ((u + 0.42) ** 2 + (v + 0.3) ** 2 <= 0.46**2) | ((u - 0.42) ** 2 + (v + 0.3) ** 2 <= 0.46**2)
    point = (v >= -0.3) & (v <= 0.9) & (u.abs() <= 0.85 * (0.9 - v) / 1.2)
    return lobes | point


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u**2 + v**2 <= 0.9**2) & ((u - 0.45) ** 2 + v**2 >= 0.7**2)


def _arrow(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    shaft = (v.abs() <= 0.2) & (u >= -0.95) & (u <= 0.15)
    head = (u >= 0.1) & (u <= 0.95) & (v.abs() <= 0.75 * (0.95 - u) / 0.85)
    return shaft | head


SHAPES: dict[str, Inside] = {
    "circle": lambda u, v: u**2 + v**2 <= 0.85**2,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.68,
    "triangle": _polygon(3, 0.5),
    "star": _star,
    "cross": lambda u, v: ((u.abs() <= 0.28) & (v.abs() <= 0.95)) | ((v.abs() <= 0.28) & (u.abs() <= 0.95)),
    "ring": lambda u, v: ((u**2 + v**2) <= 0.95**2) & ((u**2 + v**2) >= 0.55**2),
    "diamond": lambda u, v: u.abs() / 0.55 + v.abs() / 0.98 <= 1,
    "crescent": _crescent,
    "arrow": _arrow,
    "heart": _heart,
}
SHAPE_NAMES: list[str] = list(SHAPES)


def render_alpha(
    kinds: torch.Tensor,
    centers: torch.Tensor,
    radii: torch.Tensor,
    angles: torch.Tensor,
    size: int,
    supersample: int = 2,
) -> torch.Tensor:
    """Coverage maps (N, size, size) in [0, 1] of shapes ``kinds`` (indices into SHAPE_NAMES).

    ``centers`` (N, 2) are (row, col) in pixels, ``radii`` (N,) in pixels, ``angles`` (N,) in radians.
    """
    n, s = len(kinds), size * supersample
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / supersample
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    dy = rows[None] - centers[:, 0, None, None].float()
    dx = cols[None] - centers[:, 1, None, None].float()
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    r = radii.float()[:, None, None]
    u, v = (dx * cos + dy * sin) / r, (-dx * sin + dy * cos) / r
    hi = torch.zeros(n, s, s)
    for k, name in enumerate(SHAPE_NAMES):
        idx = (kinds == k).nonzero().flatten()
        if len(idx):
            hi[idx] = SHAPES[name](u[idx], v[idx]).float()
    return F.avg_pool2d(hi[:, None], supersample)[:, 0]


def backgrounds(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Varied procedural RGB backgrounds (N, 3, size, size): smooth noise, linear gradients, stripes."""
    base = torch.rand(n, 3, 1, 1, generator=gen) * 0.8 + 0.1
    other = torch.rand(n, 3, 1, 1, generator=gen) * 0.8 + 0.1
    kind = torch.randint(0, 3, (n,), generator=gen)
    t = torch.linspace(0, 1, size)
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    phi = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    ramp = rows[None] * torch.sin(phi) + cols[None] * torch.cos(phi)
    ramp = (ramp - ramp.amin((1, 2), keepdim=True)) / (
        ramp.amax((1, 2), keepdim=True) - ramp.amin((1, 2), keepdim=True)
    )
    freq = torch.randint(2, 6, (n, 1, 1), generator=gen).float()
    stripes = 0.5 + 0.5 * torch.sign(torch.sin(2 * math.pi * freq * ramp))
    noise = F.interpolate(
        torch.rand(n, 1, 4, 4, generator=gen), size=(size, size), mode="bilinear", align_corners=False
    )[:, 0]
    mix = torch.where(kind[:, None, None] == 0, noise, torch.where(kind[:, None, None] == 1, ramp, stripes))
    amount = torch.rand(n, 1, 1, 1, generator=gen) * 0.2 + 0.15
    return base + (other - base) * amount * 2 * (mix[:, None] - 0.5)


def contrasting_colours(bg_mean: torch.Tensor, gen: torch.Generator, min_dist: float = 0.55) -> torch.Tensor:
    """Random RGB colours (N, 3) at least ``min_dist`` (L2) from each background mean (else the farthest)."""
    cand = torch.rand(len(bg_mean), 16, 3, generator=gen)
    dist = (cand - bg_mean[:, None]).norm(dim=-1)
    ok = dist >= min_dist
    first_ok = torch.where(ok.any(1), ok.float().argmax(1), dist.argmax(1))
    return cand[torch.arange(len(bg_mean)), first_ok]


def draw_shapes(n: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """The random draws behind ``render_shapes(n, size, seed)``: ``labels`` (N,), ``radii`` (N,) and
    ``centers`` (N, 2, as (row, col)) in pixels, ``angles`` (N,), ``background`` (N, 3, size, size) and the
    object's ``colour`` (N, 3)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(SHAPE_NAMES), (n,), generator=gen)
    radii = (torch.rand(n, generator=gen) * 0.14 + 0.30) * size
    centers = radii[:, None] + torch.rand(n, 2, generator=gen) * (size - 2 * radii[:, None])
    angles = torch.rand(n, generator=gen) * 2 * math.pi
    bg = backgrounds(n, size, gen)
    colour = contrasting_colours(bg.mean((2, 3)), gen)
    return {"labels": labels, "radii": radii, "centers": centers, "angles": angles, "background": bg,
            "colour": colour}  # fmt: skip


def render_shapes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `shapes` data: ``n`` RGB images (N, 3, size, size) in [0, 1] and their class labels."""
    d = draw_shapes(n, size, seed)
    alpha = render_alpha(d["labels"], d["centers"], d["radii"], d["angles"], size)[:, None]
    images = d["background"] * (1 - alpha) + d["colour"][:, :, None, None] * alpha
    return images.clamp(0, 1), d["labels"]
