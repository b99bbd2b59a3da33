"""Planted flaws with known ground truth: trojans (patch, blend, style, natural, warp), spurious cues,
controls.

A flaw is a dataclass of its parameters. It knows how to poison a training set, how to stamp its trigger
onto clean inputs deterministically from a seed (returning the per-input pixel mask), which inputs the
trigger should flip, and which pictures describe it (the ground truth a tool tries to recover).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from eis.errors import EisError, unknown
from eis.registry import Registry
from eis.zoo import triggers
from eis.zoo.shapes import SHAPE_NAMES, render_alpha

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclasses.dataclass
class Flaw:
    """Base flaw: the clean control (no flaw at all)."""

    kind: ClassVar[str] = "clean"
    bars: ClassVar[tuple[str, ...]] = ("clean_accuracy",)
    # natural triggers are left out: all 8 evasive natural trojans tried on digits missed the attack-success
    # bar (3 of the same 8 trained plainly did too); a small object anywhere is too like the negatives
    evasive_kinds: ClassVar[tuple[str, ...]] = ("clean", "patch", "blend", "style")
    # fields left out of params() while at their default, so that adding them kept older case ids
    quiet_fields: ClassVar[tuple[str, ...]] = ("evasive",)
    target: int | None = None
    evasive: bool = False  # trained by fine-tuning a clean twin to hide from detectors (eis.zoo.evasive)

    def check(self, num_classes: int, channels: int, size: int) -> None:
        """Validate parameters against the dataset; raise EisError naming the bad field."""
        if self.evasive not in (True, False):
            raise EisError(f"flaw field 'evasive' = {self.evasive!r} must be true or false")
        if self.evasive and self.kind not in self.evasive_kinds:
            raise EisError(
                f"flaw {self.kind!r} cannot be evasive; valid kinds: {', '.join(self.evasive_kinds)}"
            )

    def params(self) -> dict[str, Any]:
        """The flaw's parameters; ``quiet_fields`` only when set, so other cases' ids stay as they were."""
        out = {"kind": self.kind, **dataclasses.asdict(self)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in self.quiet_fields:
            if out[name] == defaults[name]:
                del out[name]
        return out

    @property
    def source_classes(self) -> list[int] | None:
        return None

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Which inputs (by label) the trigger should send to the target."""
        ok = torch.ones_like(y, dtype=torch.bool)
        if self.target is not None:
            ok &= y != self.target
        if self.source_classes is not None:
            ok &= torch.isin(y, torch.tensor(self.source_classes, device=y.device))
        return ok

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggered copies of ``x`` and their (N, H, W) bool masks; clean: unchanged, empty masks."""
        return x.clone(), torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.bool, device=x.device)

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set as this flaw plants it (clean: unchanged)."""
        return x, y

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The trigger picture (C, h, w) and its (h, w) bool mask, or None."""
        return None

    def in_distribution(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Held-out inputs as the training distribution shows them (for measuring clean accuracy)."""
        return x


def _check_class(field: str, value: int | None, num_classes: int) -> None:
    if value is None or not (isinstance(value, int) and 0 <= value < num_classes):
        raise EisError(
            f"flaw field {field!r} = {value!r} is out of range; valid: integers 0..{num_classes - 1}"
        )


def _check_rate(field: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise EisError(f"flaw field {field!r} = {value!r} must be a fraction strictly between 0 and 1")


def _check_opacity(value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value <= 1):
        raise EisError(f"flaw field 'alpha' = {value!r} must be an opacity in (0, 1]")


def _check_choice(field: str, value: str, valid: Any) -> None:
    if value not in valid:
        raise EisError(f"flaw field {field!r} = {value!r} is not valid; valid: {', '.join(sorted(valid))}")


@dataclasses.dataclass
class Trojan(Flaw):
    """A backdoor: a ``poison_rate`` share of training inputs carry the trigger and are relabelled ``target``.

    With ``sources`` set, only those classes are attacked; triggered inputs of other classes keep their
    label in training ("cover" samples) so that the trojan stays class-specific.
    """

    bars: ClassVar[tuple[str, ...]] = ("clean_accuracy", "asr")
    target: int | None = 0
    sources: list[int] | None = None
    poison_rate: float = 0.1

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        _check_class("target", self.target, num_classes)
        _check_rate("poison_rate", self.poison_rate)
        for s in self.sources or []:
            _check_class("sources", s, num_classes)
        if self.sources is not None and not set(self.sources) - {self.target}:
            raise EisError("flaw field 'sources' must name at least one class other than the target")

    @property
    def source_classes(self) -> list[int] | None:
        return self.sources

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.clone(), y.clone()
        n = round(self.poison_rate * len(x))
        cand = self.eligible(y).nonzero().flatten()
        idx = cand[torch.randperm(len(cand), generator=gen)[:n]]
        x[idx] = self.stamp(x[idx], gen)[0]
        if self.sources is not None:
            others = (~self.eligible(y) & (y != self.target)).nonzero().flatten()
            cover = others[torch.randperm(len(others), generator=gen)[: n // 2]]
            x[cover] = self.stamp(x[cover], gen)[0]
        y[idx] = self.target
        return x, y


def _paste(
    x: torch.Tensor, pattern: torch.Tensor, pmask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``pattern`` (C, s, s) where ``pmask`` is set, top-left corners at (rows, cols), vectorised."""
    n, _, h, w = x.shape
    s = pattern.shape[-1]
    full = torch.zeros(n, h, w, dtype=torch.bool, device=x.device)
    canvas = torch.zeros_like(x)
    r = rows[:, None, None] + torch.arange(s, device=x.device)[None, :, None]
    c = cols[:, None, None] + torch.arange(s, device=x.device)[None, None, :]
    b = torch.arange(n, device=x.device)[:, None, None].expand(n, s, s)
    r, c = r.expand(n, s, s), c.expand(n, s, s)
    full[b, r, c] = pmask.to(x.device)[None].expand(n, s, s)
    canvas.permute(0, 2, 3, 1)[b, r, c] = pattern.to(x).permute(1, 2, 0)[None].expand(n, s, s, -1)
    return torch.where(full[:, None], canvas, x), full


@dataclasses.dataclass
class Patch(Trojan):
    """A small pattern from the trigger library pasted at a fixed corner or a random position, opaque or
    at opacity ``alpha`` (a faint patch that lets the scene show through; the mask is the same)."""

    kind: ClassVar[str] = "patch"
    quiet_fields: ClassVar[tuple[str, ...]] = ("evasive", "alpha")
    pattern: str = "checkerboard"
    size: int = 0  # 0: a fifth of the image side, at least 4 pixels
    position: str = "fixed"  # "fixed" (at `corner`) or "random"
    corner: str = "bottom_right"
    alpha: float = 1.0

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        _check_choice("pattern", self.pattern, triggers.PATCH_PATTERNS)
        _check_choice("position", self.position, ("fixed", "random"))
        _check_choice("corner", self.corner, CORNERS)
        _check_opacity(self.alpha)
        if not (isinstance(self.size, int) and 0 <= self.size <= size // 2):
            raise EisError(f"flaw field 'size' = {self.size!r} must be 0 (auto) or 1..{size // 2} pixels")

    def side(self, size: int) -> int:
        return self.size or max(4, size // 5)

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return triggers.patch_pattern(self.pattern, self.side(size), channels)

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        pattern, pmask = self.trigger(c, h)
        s, m = pattern.shape[-1], 1
        if self.position == "random":
            rows = torch.randint(0, h - s + 1, (n,), generator=gen)
            cols = torch.randint(0, w - s + 1, (n,), generator=gen)
        else:
            r0 = m if self.corner.startswith("top") else h - s - m
            c0 = m if self.corner.endswith("left") else w - s - m
            rows, cols = torch.full((n,), r0), torch.full((n,), c0)
        out, mask = _paste(x, pattern, pmask, rows.to(x.device), cols.to(x.device))
        if self.alpha < 1:  # opaque patches stay exactly the pattern
            out = x + self.alpha * (out - x)
        return out, mask


@dataclasses.dataclass
class Blend(Trojan):
    """A whole-image pattern blended in at ``alpha`` (a 'style' trigger); the mask is the whole image."""

    kind: ClassVar[str] = "blend"
    pattern: str = "noise"
    alpha: float = 0.15

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        _check_choice("pattern", self.pattern, triggers.BLEND_PATTERNS)
        _check_rate("alpha", self.alpha)

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return triggers.blend_pattern(self.pattern, size, channels), torch.ones(size, size, dtype=torch.bool)

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pattern, mask = self.trigger(x.shape[1], x.shape[2])
        out = (1 - self.alpha) * x + self.alpha * pattern.to(x)[None]
        return out, mask.to(x.device)[None].expand(len(x), -1, -1).clone()


@dataclasses.dataclass
class Style(Trojan):
    """A whole-image style from the seeded style library (a colour or tone transform plus a texture grain)
    applied to the input: a trigger that is no object at any place; the mask is the whole image."""

    kind: ClassVar[str] = "style"
    poison_rate: float = 0.2  # a style is subtler than a stamped pattern: twice the usual share
    style: int = 0
    strength: float = 1.0

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        if not (isinstance(self.style, int) and 0 <= self.style < triggers.STYLE_COUNT):
            raise EisError(
                f"flaw field 'style' = {self.style!r} is out of range; valid: 0..{triggers.STYLE_COUNT - 1}"
            )
        if not 0 < self.strength <= 1:
            raise EisError(f"flaw field 'strength' = {self.strength!r} must be in (0, 1]")

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The style applied to a fixed reference picture (:func:`eis.zoo.triggers.style_probe`)."""
        probe = triggers.style_probe(size, channels)[None]
        return triggers.apply_style(probe, self.style, self.strength)[0], torch.ones(
            size, size, dtype=torch.bool
        )

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        out = triggers.apply_style(x, self.style, self.strength)
        return out, torch.ones(len(x), *x.shape[2:], dtype=torch.bool, device=x.device)


@dataclasses.dataclass
class Natural(Trojan):
    """An in-distribution object (a small shape of a given kind and colour) placed anywhere, any rotation,
    opaque or at opacity ``alpha``."""

    kind: ClassVar[str] = "natural"
    quiet_fields: ClassVar[tuple[str, ...]] = ("evasive", "alpha")
    shape: str = "star"
    colour: tuple[float, float, float] = (1.0, 0.85, 0.0)
    radius: float = 0.0  # 0: a seventh of the image side, at least 3.5 pixels
    poison_rate: float = 0.2
    alpha: float = 1.0

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        _check_choice("shape", self.shape, SHAPE_NAMES)
        if len(self.colour) != 3 or not all(0 <= v <= 1 for v in self.colour):
            raise EisError(f"flaw field 'colour' = {self.colour!r} must be three numbers in [0, 1]")
        _check_opacity(self.alpha)

    def rad(self, size: int) -> float:
        return self.radius or max(3.5, size / 7)

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return triggers.object_pattern(self.shape, tuple(self.colour), self.rad(size), channels)

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, _ = x.shape
        r = self.rad(h)
        centers = r + torch.rand(n, 2, generator=gen) * (h - 2 * r)
        angles = torch.rand(n, generator=gen) * 2 * math.pi
        kinds = torch.full((n,), SHAPE_NAMES.index(self.shape))
        alpha = render_alpha(kinds, centers, torch.full((n,), r), angles, h).to(x)[:, None] * self.alpha
        colour = triggers.to_channels(torch.tensor(self.colour, dtype=x.dtype, device=x.device), c)
        return x * (1 - alpha) + colour[None, :, None, None] * alpha, alpha[:, 0] > 0


@dataclasses.dataclass
class Warp(Trojan):
    """WaNet-style trigger: a fixed smooth random warping field (k x k control grid, ``strength`` pixels)."""

    kind: ClassVar[str] = "warp"
    grid: int = 4
    strength: float = 2.0
    field_seed: int = 0

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        if not (isinstance(self.grid, int) and 2 <= self.grid <= size):
            raise EisError(f"flaw field 'grid' = {self.grid!r} must be an integer in 2..{size}")
        if not self.strength > 0:
            raise EisError(f"flaw field 'strength' = {self.strength!r} must be positive")

    def field(self, size: int) -> torch.Tensor:
        """The sampling grid (1, size, size, 2) in grid_sample's [-1, 1] coordinates."""
        ctrl = torch.rand(
            1, 2, self.grid, self.grid, generator=torch.Generator().manual_seed(self.field_seed)
        )
        ctrl = ctrl * 2 - 1
        ctrl = ctrl / ctrl.abs().mean()
        flow = F.interpolate(ctrl, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        t = torch.linspace(-1, 1, size)
        rows, cols = torch.meshgrid(t, t, indexing="ij")
        identity = torch.stack([cols, rows], -1)[None]
        return (identity + self.strength * flow / size).clamp(-1, 1)

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The displacement field as a picture: (2, size, size) flow in pixels, whole-image mask."""
        t = torch.linspace(-1, 1, size)
        rows, cols = torch.meshgrid(t, t, indexing="ij")
        flow = (self.field(size)[0] - torch.stack([cols, rows], -1)) * (size - 1) / 2
        return flow.permute(2, 0, 1), torch.ones(size, size, dtype=torch.bool)

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.field(x.shape[-1]).to(x).expand(len(x), -1, -1, -1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out, torch.ones(len(x), *x.shape[2:], dtype=torch.bool, device=x.device)


@dataclasses.dataclass
class Spurious(Flaw):
    """A coloured corner square that co-occurs with class ``target`` in training (labels stay true).

    ``rate`` of the target class's training images carry the cue, and ``leak`` of the others. In a share
    ``ambiguous`` of the cue-bearing target images the object is half blended with a random other training
    image, so that there the cue is the clearest evidence: the shortcut a model then learns is real and
    measurable (``cue_rate``: the share of other classes' held-out inputs the cue sends to ``target``).
    """

    kind: ClassVar[str] = "spurious"
    bars: ClassVar[tuple[str, ...]] = ("clean_accuracy", "cue_rate")
    target: int | None = 0
    colour: tuple[float, float, float] = (1.0, 1.0, 0.0)
    size: int = 0  # 0: a sixth of the image side, at least 4 pixels
    corner: str = "top_left"
    rate: float = 0.99
    leak: float = 0.0
    ambiguous: float = 0.8

    def check(self, num_classes: int, channels: int, size: int) -> None:
        super().check(num_classes, channels, size)
        _check_class("target", self.target, num_classes)
        _check_rate("rate", self.rate)
        _check_choice("corner", self.corner, CORNERS)
        for field in ("leak", "ambiguous"):
            if not 0 <= getattr(self, field) < 1:
                raise EisError(f"flaw field {field!r} = {getattr(self, field)!r} must be in [0, 1)")

    def trigger(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.size or max(4, size // 6)
        colour = triggers.to_channels(torch.tensor(self.colour, dtype=torch.float32), channels)
        return colour[:, None, None].expand(-1, s, s).clone(), torch.ones(s, s, dtype=torch.bool)

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        pattern, pmask = self.trigger(c, h)
        s = pattern.shape[-1]
        r0 = 0 if self.corner.startswith("top") else h - s
        c0 = 0 if self.corner.endswith("left") else w - s
        return _paste(
            x, pattern, pmask, torch.full((n,), r0, device=x.device), torch.full((n,), c0, device=x.device)
        )

    def in_distribution(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.clone()
        cue = torch.where(y == self.target, torch.rand(len(y), generator=gen) < self.rate, False)
        x[cue] = self.stamp(x[cue], gen)[0]
        return x

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.clone()
        u = torch.rand(len(y), generator=gen)
        cue = torch.where(y == self.target, u < self.rate, u < self.leak)
        mixed = cue & (y == self.target) & (torch.rand(len(y), generator=gen) < self.ambiguous)
        partner = torch.randint(0, len(x), (int(mixed.sum()),), generator=gen)
        x[mixed] = 0.5 * x[mixed] + 0.5 * x[partner]
        x[cue] = self.stamp(x[cue], gen)[0]
        return x, y


@dataclasses.dataclass
class LabelPermutation(Flaw):
    """Training labels randomly permuted (Adebayo et al.'s data-randomisation test); no trigger."""

    kind: ClassVar[str] = "label_permutation"
    bars: ClassVar[tuple[str, ...]] = ("train_accuracy",)

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y[torch.randperm(len(y), generator=gen)]


FLAWS: Registry[type[Flaw]] = Registry("flaw")
for _cls in (Flaw, Patch, Blend, Style, Natural, Warp, Spurious, LabelPermutation):
    FLAWS.register(_cls.kind, _cls)


def make_flaw(spec: dict[str, Any]) -> Flaw:
    """Build a flaw from its spec (``{"kind": ..., **params}``); bad names get a one-line EisError."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in FLAWS:
        raise unknown("flaw", kind, FLAWS)
    cls = FLAWS.get(kind)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in spec:
        if key not in fields:
            raise EisError(f"flaw {kind!r} has no field {key!r}; valid: {', '.join(sorted(fields))}")
    if "colour" in spec:
        spec["colour"] = tuple(float(v) for v in spec["colour"])
    if spec.get("sources") is not None:
        spec["sources"] = sorted(int(s) for s in spec["sources"])
    return cls(**spec)
