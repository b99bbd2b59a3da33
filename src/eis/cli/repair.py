"""``eis repair``: remove a trojan from an engineer's own model; write the repaired weights and a report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from eis.cli import app
from eis.cli.common import console, json_object, safe, user_errors, user_model
from eis.errors import EisError

OUTPUTS = ("repaired.safetensors", "repair.html", "repair.json")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse (one line) an ``--out`` whose outputs would overwrite the model or the data given."""
    folder = Path(out).expanduser()
    for name in OUTPUTS:
        for what, path in inputs.items():
            if _same_file(folder / name, Path(path).expanduser()):
                raise EisError(
                    f"--out {str(out)!r} would overwrite the {what} {str(path)!r} with {name}; choose "
                    "another --out folder (eis repair never writes over its inputs)"
                )


def write_weights(model: Any, path: Path) -> None:
    """Write the repaired weights under a temporary name and rename them into place: a killed or failed
    write never leaves a partial ``repaired.safetensors``."""
    from eis.usermodel import save_weights

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_weights(model, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@app.command()
@user_errors
def repair(
    model_path: Path = typer.Argument(..., metavar="MODEL", help=".safetensors weights, TorchScript, .pt2."),
    data: Path = typer.Option(
        ..., "--data", help="Clean labelled examples: image folder, .safetensors, .npz."
    ),
    out: Path = typer.Option(Path("eis-repair"), "--out", help="Folder for the weights, repair.html/json."),
    arch: str = typer.Option(
        None, "--arch", help="Factory: package.module:function or path/to/file.py:function."
    ),
    arch_kwargs: str = typer.Option(None, "--arch-kwargs", help="JSON keyword arguments for the factory."),
    method: str = typer.Option(
        "auto", "--method", help="Repair method (eis tools --family repair), or auto: by what NC finds."
    ),
    settings: str = typer.Option(None, "--settings", help='JSON settings of the method, e.g. {"epochs": 5}.'),
    validation: float = typer.Option(0.2, "--validation", help="Share of the data held out for the report."),
    nc_steps: int = typer.Option(100, "--nc-steps", min=1, help="Neural Cleanse steps."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a whole model."),
    mean: str = typer.Option(None, "--mean", help="Per-channel normalisation mean, e.g. 0.5,0.5,0.5."),
    std: str = typer.Option(None, "--std", help="Per-channel normalisation std."),
    size: int = typer.Option(None, "--size", min=1, help="Resize images to SIZE x SIZE."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Repair MODEL with part of --data; write DIR/repaired.safetensors, DIR/repair.html and repair.json."""
    import torch

    import eis.repair
    from eis.usermodel import load_examples

    check_outputs(out, {"model": model_path, "data": data})
    torch.manual_seed(seed)
    model = user_model(model_path, arch, arch_kwargs, trust_pickle, mean, std)
    x, y, _ = load_examples(data, size=size)
    assert y is not None
    with console.status(f"repairing with {safe(method)} ..."):
        repaired, report = eis.repair.repair(
            model,
            x,
            y,
            method=method,
            settings=json_object(settings, "--settings"),
            validation=validation,
            detector_steps=nc_steps,
            seed=seed,
        )
    folder = Path(out).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    check_outputs(out, {"model": model_path, "data": data})  # again: the folder may have changed meanwhile
    weights = folder / "repaired.safetensors"
    write_weights(eis.repair.unwrap(repaired), weights)  # first: a report always has its weights beside it
    page, js = report.write(out)
    for line in report.summary():
        console.print(safe(line), highlight=False, soft_wrap=True)
    console.print(
        f"repaired weights written to {safe(weights.resolve())}; report {safe(page.name)}, {safe(js.name)}",
        highlight=False,
    )
