"""Fake cases, tools, tracks and suites for the runner/store/report tests (an ``EIS_PLUGINS`` module).

Everything registered here has a ``fake`` name and the ``fake`` family, so real tools never run on fake
cases and fake tools never run on real ones. Import it to register; subprocesses get it through
``EIS_PLUGINS=bench_fakes`` with ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from eis.cache import Prep
from eis.runner.plugins import SUITES, register_suite
from eis.tools.base import TOOLS, Tool
from eis.tracks.base import TRACKS, CellResult, Track

H = W = 8
PATCH = (slice(0, 4), slice(0, 4))  # the trigger sits in the top-left quarter


@dataclasses.dataclass
class FakeTruth:
    kind: str

    def mask(self, n: int) -> torch.Tensor:
        m = torch.zeros(n, H, W, dtype=torch.bool)
        if self.kind == "patch":
            m[:, PATCH[0], PATCH[1]] = True
        elif self.kind == "blend":
            m[:] = True
        return m


@dataclasses.dataclass
class FakeCase:
    """The Case API the runner relies on, and nothing more."""

    id: str
    name: str
    flaw: str = "patch"
    dataset: str = "fakes"
    arch: str = "tiny"
    num_classes: int = 3
    input_shape: tuple[int, int, int] = (1, H, W)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def model(self, device: Any = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.id[-4:], 16))
            net = nn.Sequential(
                nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * H * W, 3)
            )
        return net.to(device).eval() if device is not None else net.eval()

    def inputs(self, n: int | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(self.id[-4:], 16))
        n = n or 4
        return torch.rand(n, 1, H, W, generator=g), torch.randint(0, 3, (n,), generator=g)

    def truth(self) -> FakeTruth:
        return FakeTruth(self.flaw)


def make_cases(n: int = 3, flaws: tuple[str, ...] = ("patch", "blend", "clean")) -> list[FakeCase]:
    return [FakeCase(id=f"fakecase{i:04x}", name=f"fake-{i}", flaw=flaws[i % len(flaws)]) for i in range(n)]


# -- tools ---------------------------------------------------------------------------------------------
class _FakeTool(Tool):
    family: ClassVar[str] = "fake"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _register(cls: type) -> type:
    cls = dataclasses.dataclass(cls)
    if cls.name not in TOOLS:
        TOOLS.register(cls.name, cls)
    return cls


@_register
class Oracle(_FakeTool):
    name: ClassVar[str] = "fake-oracle"

    def attribute(self, model, inputs, target):
        out = torch.zeros(inputs.shape[0], H, W)
        out[:, PATCH[0], PATCH[1]] = 1.0
        return out


@_register
class Grad(_FakeTool):
    name: ClassVar[str] = "fake-grad"
    scale: float = 1.0

    def attribute(self, model, inputs, target):
        x = inputs.clone().requires_grad_(True)
        model(x).gather(1, target[:, None]).sum().backward()
        return (x.grad.abs() * self.scale).sum(1)


@_register
class RandomMap(_FakeTool):
    name: ClassVar[str] = "fake-random"
    control: ClassVar[bool] = True

    def attribute(self, model, inputs, target):
        return torch.rand(inputs.shape[0], H, W)  # global RNG on purpose: the runner seeds each cell


@_register
class Blank(_FakeTool):
    name: ClassVar[str] = "fake-blank"
    control: ClassVar[bool] = True

    def attribute(self, model, inputs, target):
        return torch.ones(inputs.shape[0], H, W)


@_register
class Raises(_FakeTool):
    name: ClassVar[str] = "fake-raise"

    def attribute(self, model, inputs, target):
        raise RuntimeError("boom from fake-raise")


@_register
class NaNMap(_FakeTool):
    name: ClassVar[str] = "fake-nan"

    def attribute(self, model, inputs, target):
        return torch.full((inputs.shape[0], H, W), float("nan"))


@_register
class Slow(_FakeTool):
    name: ClassVar[str] = "fake-slow"
    delay: float = -1.0  # < 0: read FAKE_SLOW_DELAY (default 0.2 s)

    def attribute(self, model, inputs, target):
        time.sleep(self.delay if self.delay >= 0 else float(os.environ.get("FAKE_SLOW_DELAY", "0.2")))
        return Oracle().attribute(model, inputs, target)


@_register
class Crash(_FakeTool):
    name: ClassVar[str] = "fake-crash"

    def attribute(self, model, inputs, target):
        os._exit(3)  # a segfault or an OOM kill, as far as the runner can tell


# -- tracks --------------------------------------------------------------------------------------------
def bootstrap(values: np.ndarray, seed: int = 0, n_boot: int = 200) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


class FakeLocalize(Track):
    """Fraction of the map's mass on the trigger pixels."""

    name: ClassVar[str] = "fake-localize"
    family: ClassVar[str] = "fake"
    headline: ClassVar[str] = "hit"

    def applies_to(self, case) -> bool:
        return case.truth().kind != "clean"

    def run(self, case, tool, *, seed: int = 0) -> CellResult:
        model = case.model()
        x, y = case.inputs(n=4)
        maps = tool.attribute(model, x, y).detach().float()
        if not torch.isfinite(maps).all():
            raise ValueError(f"tool {tool.name!r} returned a non-finite map")
        maps = maps.abs()
        mask = case.truth().mask(x.shape[0])
        hit = (maps * mask).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)
        shown = maps[0] / maps[0].max().clamp_min(1e-12)
        return CellResult(
            scores={"hit": float(hit.mean())},
            flaw=case.truth().kind,
            items={"hit": hit.tolist()},
            extras={"seed": seed, "first": float(maps.flatten()[0])},
            gallery={"input": x[0].numpy(), "mask": mask[0].float().numpy(), "map": shown.numpy()},
        )

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        ok = rows[rows.status == "ok"]
        out = []
        blank = ok[ok.tool == "fake-blank"]
        blank_mean = float(np.mean([s["hit"] for s in blank.scores])) if len(blank) else None
        for (tool, control), g in ok.groupby(["tool", "control"]):
            for flaw, gg in [("all", g), *list(g.groupby("flaw"))]:
                vals = np.array([v for it in gg["items"] for v in it["hit"]])
                lo, hi = bootstrap(vals)
                verdict = ""
                if flaw == "all" and blank_mean is not None and tool != "fake-blank":
                    verdict = f"beats blank: {'yes' if lo > blank_mean else 'no'}"
                out.append(
                    dict(
                        tool=tool,
                        control=bool(control),
                        flaw=flaw,
                        metric="hit",
                        mean=float(vals.mean()),
                        lo=lo,
                        hi=hi,
                        n=len(gg),
                        verdict=verdict,
                    )
                )
        return pd.DataFrame(out)


class FakeSpread(FakeLocalize):
    """A second track (lower is better) so that reports have more than one section."""

    name: ClassVar[str] = "fake-spread"
    headline: ClassVar[str] = "spread"
    higher_is_better: ClassVar[bool] = False

    def applies_to(self, case) -> bool:
        return True

    def run(self, case, tool, *, seed: int = 0) -> CellResult:
        x, y = case.inputs(n=4)
        maps = tool.attribute(case.model(), x, y).detach().float().abs()
        if not torch.isfinite(maps).all():
            raise ValueError("non-finite map")
        spread = (maps > 0.5 * maps.flatten(1).max(1).values[:, None, None]).float().flatten(1).mean(1)
        return CellResult(
            scores={"spread": float(spread.mean())}, flaw=case.truth().kind, items={"spread": spread.tolist()}
        )

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        ok = rows[rows.status == "ok"]
        out = []
        for (tool, control), g in ok.groupby(["tool", "control"]):
            for flaw, gg in [("all", g), *list(g.groupby("flaw"))]:
                vals = np.array([v for it in gg["items"] for v in it["spread"]])
                lo, hi = bootstrap(vals)
                out.append(
                    dict(
                        tool=tool,
                        control=bool(control),
                        flaw=flaw,
                        metric="spread",
                        mean=float(vals.mean()),
                        lo=lo,
                        hi=hi,
                        n=len(gg),
                        verdict="",
                    )
                )
        return pd.DataFrame(out)


def write_prep_log(log: str, fail: bool) -> None:
    """The shared one-off work of ``fake-prepared``: a line in ``log`` (or a failure)."""
    if fail:
        raise RuntimeError("no room for the shared module")
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\n")


class FakePrepared(FakeSpread):
    """``fake-spread`` whose cells share one prep, and record whether it had run before them."""

    name: ClassVar[str] = "fake-prepared"

    def __init__(self, log: str = "", fail: bool = False) -> None:
        self.log, self.fail = log, fail

    def prepare(self, case, tool, partners=()) -> list[Prep]:
        return [Prep("the fake shared module", functools.partial(write_prep_log, self.log, self.fail))]

    def run(self, case, tool, *, seed: int = 0) -> CellResult:
        res = super().run(case, tool, seed=seed)
        res.extras["prepared"] = Path(self.log).is_file()
        return res


for _t in (FakeLocalize, FakeSpread, FakePrepared):
    if _t.name not in TRACKS:
        TRACKS.register(_t.name, _t)

if "fake-suite" not in SUITES:
    register_suite("fake-suite", lambda: make_cases(int(os.environ.get("FAKE_SUITE_N", "3"))))
