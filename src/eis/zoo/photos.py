"""The realistic tier's data: ``photos``, objects with real textures on crops of real photographs.

Every image is a crop of one of the photographs that ship with scikit-image (astronaut, coffee, chelsea,
rocket, the Hubble deep field, a retina, a stained tissue sample, a motorcycle, and greyscale ones: camera,
moon, coins, clock, cell), at a random scale and place, sometimes mirrored. On it sit one to three small
distractor objects and, drawn last, one large object whose shape is the label (the shape library's ten
shapes). Every object is filled with a crop of a real texture (brick, grass, gravel) tinted a random
colour, so that neither the background nor the objects are flat procedural colour: an attribution map that
follows edges or texture finds plenty of both, as it would on a photograph.

Nothing is downloaded: the photographs are in the scikit-image wheel. Everything is drawn from one seed
(``render_photos``), chunked so memory stays bounded; the image side is a knob (64 by default, up to 128).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from eis.zoo.scenes import render_chunked
from eis.zoo.shapes import SHAPE_NAMES, render_alpha

PHOTO_CLASSES = tuple(SHAPE_NAMES)
BACKGROUND_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "stereo_motorcycle", "camera", "moon", "coins", "clock", "cell",
)  # fmt: skip
TEXTURE_PHOTOS = ("brick", "grass", "gravel")
SIZES = (32, 48, 64, 96, 128)
MAIN_RADIUS = (0.26, 0.36)  # the labelled object's radius, as a share of the image side
DISTRACTOR_RADIUS = (0.06, 0.12)
DISTRACTORS = (1, 3)  # inclusive range of distractor objects per image
CROP_SCALE = (0.35, 1.0)  # a crop's side, as a share of the (resized) photograph's shorter side
SOURCE_SIDE = 2.5  # photographs are first resized (antialiased) so their shorter side is this x the image's


def _load(name: str) -> np.ndarray:
    """One bundled photograph as float32 (H, W, 3) in [0, 1] (greyscale ones repeated over 3 channels)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    arr = np.asarray(img, dtype=np.float32)
    if arr.max() > 1:
        arr = arr / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3]


@functools.cache
def _sources(names: tuple[str, ...], size: int) -> tuple[torch.Tensor, ...]:
    """The photographs as (3, h, w) tensors, resized (antialiased) to a shorter side of SOURCE_SIDE * size."""
    out = []
    for name in names:
        x = torch.from_numpy(_load(name)).permute(2, 0, 1)[None]
        scale = SOURCE_SIDE * size / min(x.shape[-2:])
        hw = (max(size, round(x.shape[-2] * scale)), max(size, round(x.shape[-1] * scale)))
        out.append(
            F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        )
    return tuple(out)


def random_crops(
    sources: tuple[torch.Tensor, ...], n: int, size: int, gen: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """``n`` crops (N, 3, size, size) of randomly chosen ``sources`` at a random scale and place."""
    which = torch.randint(0, len(sources), (n,), generator=gen)
    scale = torch.rand(n, generator=gen) * (CROP_SCALE[1] - CROP_SCALE[0]) + CROP_SCALE[0]
    pos = torch.rand(n, 2, generator=gen)
    mirror = (torch.rand(n, generator=gen) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty(n, 3, size, size)
    for k, src in enumerate(sources):
        idx = (which == k).nonzero().flatten()
        if not len(idx):
            continue
        h, w = src.shape[-2:]
        side = scale[idx] * min(h, w)  # crop side in source pixels
        sx, sy = side / w, side / h  # half-extent of the crop in grid_sample's [-1, 1] units
        cx = (pos[idx, 1] * 2 - 1) * (1 - sx)
        cy = (pos[idx, 0] * 2 - 1) * (1 - sy)
        sign = torch.where(mirror[idx], -1.0, 1.0)
        theta = torch.zeros(len(idx), 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = sy, cy
        grid = F.affine_grid(theta, [len(idx), 3, size, size], align_corners=False)
        out[idx] = F.grid_sample(src[None].expand(len(idx), -1, -1, -1), grid, align_corners=False)
    return out.clamp(0, 1)


def _textured_fill(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Fills (N, 3, size, size): a real texture's luminance, contrast-stretched, tinted a random colour."""
    tex = random_crops(_sources(TEXTURE_PHOTOS, size), n, size, gen).mean(1, keepdim=True)
    lo, hi = tex.amin((2, 3), keepdim=True), tex.amax((2, 3), keepdim=True)
    tex = (tex - lo) / (hi - lo).clamp_min(1e-6)
    colour = torch.rand(n, 3, 1, 1, generator=gen) * 0.8 + 0.1
    return (colour * (0.55 + 0.9 * tex)).clamp(0, 1)


def _place(n: int, size: int, radius: tuple[float, float], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    radii = (torch.rand(n, generator=gen) * (radius[1] - radius[0]) + radius[0]) * size
    centres = radii[:, None] + torch.rand(n, 2, generator=gen) * (size - 2 * radii[:, None])
    angles = torch.rand(n, generator=gen) * 2 * math.pi
    return centres, radii, angles


def _render_chunk(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, len(PHOTO_CLASSES), (n,), generator=gen)
    images = random_crops(_sources(BACKGROUND_PHOTOS, size), n, size, gen)
    n_distract = torch.randint(DISTRACTORS[0], DISTRACTORS[1] + 1, (n,), generator=gen)
    for j in range(DISTRACTORS[1]):
        kinds = torch.randint(0, len(SHAPE_NAMES), (n,), generator=gen)
        alpha = render_alpha(kinds, *_place(n, size, DISTRACTOR_RADIUS, gen), size, supersample=1)
        alpha = (alpha * (j < n_distract).float()[:, None, None])[:, None]
        images = images * (1 - alpha) + _textured_fill(n, size, gen) * alpha
    alpha = render_alpha(labels, *_place(n, size, MAIN_RADIUS, gen), size)[:, None]
    images = images * (1 - alpha) + _textured_fill(n, size, gen) * alpha
    return images.clamp(0, 1), labels


def render_photos(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (N, 3, size, size) in [0, 1] and their labels (the large object's shape)."""
    return render_chunked(_render_chunk, n, size, seed)
