"""``eis audit``: audit an engineer's own model; ``eis calibrate``: rebuild the track-record table."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, user_errors, user_model


@app.command()
@user_errors
def audit(
    model_path: Path = typer.Argument(..., metavar="MODEL", help=".safetensors weights, TorchScript, .pt2."),
    data: Path = typer.Option(
        ..., "--data", help="Clean labelled examples: image folder, .safetensors, .npz."
    ),
    out: Path = typer.Option(Path("eis-audit"), "--out", help="Folder for audit.html and audit.json."),
    arch: str = typer.Option(
        None, "--arch", help="Factory: package.module:function or path/to/file.py:function."
    ),
    arch_kwargs: str = typer.Option(None, "--arch-kwargs", help="JSON keyword arguments for the factory."),
    inputs: Path = typer.Option(None, "--inputs", help="Inputs to screen for triggers (folder or file)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a whole model."),
    mean: str = typer.Option(None, "--mean", help="Per-channel normalisation mean, e.g. 0.5,0.5,0.5."),
    std: str = typer.Option(None, "--std", help="Per-channel normalisation std."),
    size: int = typer.Option(None, "--size", min=1, help="Resize images to SIZE x SIZE."),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration table (default: shipped)."),
    detectors: str = typer.Option(
        None, "--detectors", help="Comma-separated detection tools (default: all)."
    ),
    nc_steps: int = typer.Option(
        None, "--nc-steps", min=1, help="Neural Cleanse steps (default: the calibrated setting, 300)."
    ),
    fail_on_suspect: bool = typer.Option(
        False, "--fail-on-suspect", help="Exit 1 when the verdict is suspicious."
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Audit MODEL for planted flaws; write DIR/audit.html and DIR/audit.json."""
    import torch

    import eis.audit
    from eis.usermodel import load_examples

    torch.manual_seed(seed)
    model = user_model(model_path, arch, arch_kwargs, trust_pickle, mean, std)
    x, y, _ = load_examples(data, size=size)
    xs, names = None, None
    if inputs is not None:
        xs, _, names = load_examples(inputs, size=size, labelled=False)
    report = eis.audit.audit(
        model,
        x,
        y,
        inputs=xs,
        input_names=names,
        calibration=str(calibration) if calibration else None,
        detectors=detectors.split(",") if detectors else None,
        settings={"neural_cleanse": {"steps": nc_steps}} if nc_steps else None,
        seed=seed,
    )
    html, js = report.write(out)
    for line in report.summary():
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"audit written to {html.resolve()} and {js.name}", highlight=False)
    if fail_on_suspect and report.suspicious:
        raise typer.Exit(code=1)


@app.command()
@user_errors
def calibrate(
    out: Path = typer.Option(Path("calibration.json"), "--out", help="Where to write the table."),
    store: list[Path] = typer.Option(
        None,
        "--store",
        help="Results store (default: $EIS_STORE or EIS_HOME); repeat to pool the cells of several "
        "(a cell in more than one counts once).",
    ),
    suites: str = typer.Option(..., "--suites", help="Comma-separated suites the store's runs came from."),
    note: str = typer.Option("", "--note", help="A sentence kept in the table (e.g. how it was made)."),
) -> None:
    """Build the calibration table (each tool's track record) from one or more results stores."""
    from eis.audit import build_calibration, save_calibration
    from eis.results.store import open_store

    records: dict[str, dict] = {}
    for path in store or [None]:
        with open_store(path, create=False) as st:
            for rec in st.records():
                records.setdefault(rec["key"], rec)
    table = build_calibration(list(records.values()), suites=suites.split(","), note=note)
    path = save_calibration(table, out)
    console.print(
        f"calibration table for {len(table['detectors'])} detectors written to {path}", highlight=False
    )
