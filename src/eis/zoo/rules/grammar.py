"""Rule families: secret binary labelling rules describable in one sentence, as JSON parameters.

A rule is a plain dict: ``family`` plus the family's parameters (no code). Image rules read a
(N, 1, H, W) batch in [0, 1]; token rules read (N, 2) int64 pairs (x, y) in Z_p. :func:`evaluate` gives
the rule's labels, :func:`draw` a seeded rule of a family. Image families:

- ``template_band``: the dot product of the image with training image ``template`` lies in [lo, hi];
  the family of the solved MNIST rule of "A Challenge for Mechanists" (EIS VII);
- ``region_mass``: the mean intensity in the rectangle ``rows`` x ``cols`` exceeds ``threshold``;
- ``centroid``: the ink's centre of mass along ``axis`` (row or col) exceeds ``threshold``.

Token families (pairs in Z_p):

- ``linear_mod``: (a*x + b*y) mod p < c;
- ``stripes``: (x // wx + y // wy) is odd (a checkerboard of bands);
- ``bands``: x in [x0, x1) xor y in [y0, y1) (one row band and one column band).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from eis.errors import EisError

IMAGE_FAMILIES = ("template_band", "region_mass", "centroid")
TOKEN_FAMILIES = ("linear_mod", "stripes", "bands")
FAMILIES = IMAGE_FAMILIES + TOKEN_FAMILIES
SENTENCES = {
    "template_band": "the image's dot product with one training image lies in a band [lo, hi]",
    "region_mass": "the mean intensity in one rectangle of the image exceeds a threshold",
    "centroid": "the ink's centre of mass along the rows or the columns exceeds a threshold",
    "linear_mod": "(a*x + b*y) mod p < c",
    "stripes": "(x // wx + y // wy) is odd",
    "bands": "x lies in a band [x0, x1) xor y lies in a band [y0, y1)",
}
REGION_STEP = 2  # region corners lie on this pixel grid


def kind_of(family: str) -> str:
    """``image`` or ``token``; unknown families are a one-line error."""
    if family in IMAGE_FAMILIES:
        return "image"
    if family in TOKEN_FAMILIES:
        return "token"
    raise EisError(f"unknown rule family {family!r}; valid: {', '.join(FAMILIES)}")


# -- statistics the image families threshold (shared by evaluation, search and solvers) -----------------
def template_stat(x: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """(N,) dot products of each image with ``template`` (same shape as one image)."""
    return x.flatten(1).double() @ template.flatten().double().to(x.device)


def region_stat(x: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """(N,) mean intensity (over channels too) in rows [r0, r1) x cols [c0, c1)."""
    (r0, r1), (c0, c1) = rows, cols
    return x[:, :, r0:r1, c0:c1].double().mean((1, 2, 3))


def centroid_stat(x: torch.Tensor, axis: str) -> torch.Tensor:
    """(N,) centre of mass of the intensity along ``axis`` (row or col); the middle for a blank image."""
    ink = x.double().sum(1)  # (N, H, W)
    profile = ink.sum(2) if axis == "row" else ink.sum(1)
    coords = torch.arange(profile.shape[1], dtype=torch.float64, device=x.device)
    mass = profile.sum(1)
    middle = torch.full_like(mass, (profile.shape[1] - 1) / 2)
    return torch.where(mass > 0, (profile * coords).sum(1) / mass.clamp(min=1e-12), middle)


def templates(dataset: str) -> torch.Tensor:
    """The images a ``template_band`` rule may name: the dataset's training split (un-augmented)."""
    from eis.zoo.datasets import get_dataset

    return get_dataset(dataset).train_x


def evaluate(rule: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """(N,) bool labels of ``rule`` on ``x`` (images (N, C, H, W) or pairs (N, 2))."""
    family = rule.get("family")
    kind = kind_of(str(family))
    if kind == "image" and x.dim() != 4:
        raise EisError(f"an image rule labels (N, C, H, W) images, got shape {tuple(x.shape)}")
    if kind == "token" and (x.dim() != 2 or x.shape[1] != 2):
        raise EisError(f"a token rule labels (N, 2) pairs, got shape {tuple(x.shape)}")
    try:
        if family == "template_band":
            s = template_stat(x, templates(rule["dataset"])[int(rule["template"])])
            return (s >= rule["lo"]) & (s <= rule["hi"])
        if family == "region_mass":
            return region_stat(x, tuple(rule["rows"]), tuple(rule["cols"])) > rule["threshold"]
        if family == "centroid":
            return centroid_stat(x, rule["axis"]) > rule["threshold"]
        xs, ys = x[:, 0].long(), x[:, 1].long()
        if family == "linear_mod":
            return (rule["a"] * xs + rule["b"] * ys) % rule["p"] < rule["c"]
        if family == "stripes":
            return (xs // rule["wx"] + ys // rule["wy"]) % 2 == 1
        (x0, x1), (y0, y1) = rule["x"], rule["y"]
        return ((xs >= x0) & (xs < x1)) ^ ((ys >= y0) & (ys < y1))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise EisError(f"malformed {family} rule {rule!r}: {exc.__class__.__name__} {exc}") from None


def draw(family: str, seed: int, *, dataset: str = "digits", p: int = 59) -> dict[str, Any]:
    """A seeded rule of ``family``; thresholds sit at quantiles of the training inputs' statistic, so
    that both labels are common."""
    rng = random.Random(f"{family}|{seed}")
    if kind_of(family) == "image":
        x = templates(dataset)

        def quantile(stat: torch.Tensor, q: float) -> float:
            return round(float(stat.quantile(q)), 3)

        rule: dict[str, Any] = {"family": family, "dataset": dataset}
        if family == "template_band":
            k = rng.randrange(len(x))
            stat, lo = template_stat(x, x[k]), rng.uniform(0.15, 0.4)
            return rule | {
                "template": k,
                "lo": quantile(stat, lo),
                "hi": quantile(stat, lo + rng.uniform(0.3, 0.45)),
            }
        if family == "region_mass":
            h, w = x.shape[2:]
            r0, c0 = (REGION_STEP * rng.randrange(1, h // (2 * REGION_STEP) + 1) for _ in range(2))
            rows = [r0, min(h, r0 + REGION_STEP * rng.randrange(2, 4))]
            cols = [c0, min(w, c0 + REGION_STEP * rng.randrange(2, 4))]
            stat = region_stat(x, tuple(rows), tuple(cols))  # type: ignore[arg-type]
            return rule | {"rows": rows, "cols": cols, "threshold": quantile(stat, rng.uniform(0.35, 0.65))}
        axis = rng.choice(["row", "col"])
        return rule | {"axis": axis, "threshold": quantile(centroid_stat(x, axis), rng.uniform(0.3, 0.7))}
    if family == "linear_mod":
        return {"family": family, "p": p, "a": rng.randrange(1, p), "b": rng.randrange(1, p),
                "c": rng.randrange(p // 4, 3 * p // 4 + 1)}  # fmt: skip
    if family == "stripes":
        return {
            "family": family,
            "p": p,
            "wx": rng.randrange(3, p // 4 + 1),
            "wy": rng.randrange(3, p // 4 + 1),
        }
    bands = []
    for _ in range(2):
        start = rng.randrange(0, p // 2)
        bands.append([start, start + rng.randrange(p // 4, p // 2 + 1)])
    return {"family": family, "p": p, "x": bands[0], "y": bands[1]}
