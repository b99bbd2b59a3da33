"""What ``eis audit --shadows`` and ``eis calibrate --shadows`` share: reading the recipe options, training
the shadows with progress bars, and printing what they cost."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from eis.cli.common import console, err_console, floats, json_object
from eis.errors import EisError

RECIPE_HELP = (
    "Shadow recipe setting KEY=VALUE, repeatable: epochs, batch_size, lr, optimizer (adam, adamw, sgd), "
    "schedule (onecycle, cosine, constant), weight_decay, augment (flip,crop), kinds (patch, patch_random, "
    "blend, warp, natural, style), poison_rate (low,high), trigger_size (low,high), opacity (low,high), "
    "evasive (true/false), tolerance, asr_bar, seed."
)
TRAIN_HELP = "Your training function, package.module:function or file.py:function, called fn(model, dataset)."


def recipe_from(shadows: int, settings: list[str] | None, trainer: str | None) -> Any:
    """A validated :class:`~eis.shadows.ShadowRecipe` from ``--shadows``, ``--recipe K=V`` and ``--train``."""
    from eis.shadows import ShadowRecipe

    fields = {f.name: f for f in dataclasses.fields(ShadowRecipe)}
    values: dict[str, Any] = {"shadows": shadows, "trainer": trainer}
    for item in settings or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key in ("shadows", "trainer"):
            valid = ", ".join(k for k in fields if k not in ("shadows", "trainer"))
            raise EisError(f"--recipe {item!r} must read KEY=VALUE with KEY one of: {valid}")
        values[key] = _parse(key, text.strip(), fields[key].default)
    return ShadowRecipe(**values).validated()


def _parse(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if key in ("augment", "kinds"):
            return tuple(p.strip() for p in text.split(",") if p.strip())
        if isinstance(default, tuple):  # a (low, high) range
            pair = floats(text, f"--recipe {key}")
            if pair is None or len(pair) != 2:
                raise ValueError
            return (pair[0], pair[1])
    except ValueError:
        raise EisError(f"--recipe {key}={text!r} is not a valid value (default: {default!r})") from None
    return text


def run_shadows(
    *,
    shadows: int,
    recipe: list[str] | None,
    trainer: str | None,
    arch: str | None,
    arch_kwargs: str | None,
    mean: str | None,
    std: str | None,
    train_data: Path | None,
    size: int | None,
    x: Any,
    y: Any,
    num_classes: int,
    user_accuracy: float,
    detectors: list[str] | None,
    settings: dict[str, dict[str, Any]] | None,
    workers: int | None,
    device: str,
    backend: str,
    address: str | None,
) -> Any:
    """Train (or reuse) the shadows and return the :class:`~eis.shadows.ShadowRun`; one line on bad input."""
    from eis.cli.zoo import build_progress
    from eis.shadows import UserArch, calibrate_shadows
    from eis.shadows.calibrate import check_data
    from eis.usermodel import load_examples
    from eis.workers import check_backend, default_workers
    from eis.zoo.spec import resolve_device

    if train_data is None:
        raise EisError("--shadows trains models on your training data: give --train-data (folder or file)")
    if not arch:
        raise EisError(
            "--shadows trains models with your factory: give --arch package.module:function or "
            "file.py:function"
        )
    check_backend(backend)
    r = recipe_from(shadows, recipe, trainer)
    train_x, train_y, _ = load_examples(train_data, size=size)
    user_arch = UserArch.of(arch, json_object(arch_kwargs, "--arch-kwargs"), floats(mean, "--mean"),
                            floats(std, "--std"))  # fmt: skip
    check_data(train_x, train_y, x, num_classes)  # before the progress bar: bad data is one line
    n_workers = default_workers() if workers is None else workers
    with build_progress(f"shadows ({2 * r.shadows} models)", 2 * r.shadows) as on_build:
        run = calibrate_shadows(
            user_arch, train_x, train_y, x, y,
            num_classes=num_classes, user_accuracy=user_accuracy, recipe=r, detectors=detectors,
            settings=settings, workers=n_workers, device=resolve_device(device), backend=backend,
            address=address, on_build=on_build, console=err_console, progress=True,
        )  # fmt: skip
    sh = run.table["shadows"]
    how = "reused from the cache" if run.cached else (
        f"trained in {sh['seconds']['build']:.0f} s, detectors {sh['seconds']['detectors']:.0f} s"
    )  # fmt: skip
    console.print(
        f"shadow calibration {run.key}: {sh['n_clean']} clean + {sh['n_flawed']} flawed shadows, {how}"
        + (f"; {len(sh['missed'])} missed their bars" if sh["missed"] else ""),
        highlight=False,
        soft_wrap=True,
    )
    return run
