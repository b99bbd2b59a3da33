"""``eis audit``: audit an engineer's own model; ``eis calibrate``: rebuild the track-record table."""

from __future__ import annotations

from pathlib import Path

import typer

from eis.cli import app
from eis.cli.common import console, err_console, floats, json_object, safe, user_errors, user_model
from eis.cli.shadows import RECIPE_HELP, TRAIN_HELP, run_shadows
from eis.cli.zoo import ADDRESS_HELP, BACKEND_HELP, DEVICE_HELP, WORKERS_HELP
from eis.errors import EisError


@app.command()
@user_errors
def audit(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help=".safetensors weights, TorchScript, .pt2; with --lm a transformers folder."
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        help="Clean labelled examples: image folder, .safetensors, .npz; with --lm a text file.",
    ),
    lm: bool = typer.Option(False, "--lm", help="MODEL is a local transformers causal-LM directory."),
    targets: Path = typer.Option(
        None,
        "--targets",
        help="With --lm: target strings the model must never emit, one per line (without: the scan only).",
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
    shadows: int = typer.Option(
        None, "--shadows", min=2, help="Calibrate on N clean + N flawed shadow models like yours first."
    ),
    train_data: Path = typer.Option(None, "--train-data", help="Labelled training data for the shadows."),
    recipe: list[str] = typer.Option(None, "--recipe", help=RECIPE_HELP),
    trainer: str = typer.Option(None, "--train", help=TRAIN_HELP),
    workers: int = typer.Option(None, "--workers", min=0, help=WORKERS_HELP, show_default=False),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Audit MODEL for planted flaws; write DIR/audit.html and DIR/audit.json.

    With --shadows N and --train-data, the track records are measured first on N clean and N flawed
    models of your architecture trained on your data (cached; see `eis calibrate --shadows`).
    """
    if lm:
        audit_lm_cli(model_path, data, targets, out, trust_pickle, seed, fail_on_suspect)
        return
    if targets is not None:
        raise EisError("--targets goes with --lm (a language model)")
    import torch

    import eis.audit
    from eis.health import check_model
    from eis.plugins import load_plugins
    from eis.usermodel import check_compatible, load_examples

    load_plugins()  # detection tools of installed plugins and $EIS_PLUGINS are named like eis's own
    torch.manual_seed(seed)
    model = user_model(model_path, arch, arch_kwargs, trust_pickle, mean, std)
    x, y, _ = load_examples(data, size=size)
    xs, names = None, None
    if inputs is not None:
        xs, _, names = load_examples(inputs, size=size, labelled=False)
    tool_settings = {"neural_cleanse": {"steps": nc_steps}} if nc_steps else None
    chosen = detectors.split(",") if detectors else None
    table: dict | str | None = str(calibration) if calibration else None
    shadow_error = None
    if shadows is not None:
        k = check_compatible(model, x, y)
        health = check_model(model, x, y)  # refuse a broken model before training shadows for it
        try:
            table = run_shadows(
                shadows=shadows, recipe=recipe, trainer=trainer, arch=arch, arch_kwargs=arch_kwargs,
                mean=mean, std=std, train_data=train_data, size=size, x=x, y=y, num_classes=k,
                user_accuracy=health.accuracy, detectors=chosen, settings=tool_settings, workers=workers,
                device=device, backend=backend, address=address,
            ).table  # fmt: skip
        except EisError as exc:  # say why, then audit with what there is: the zoo's records
            shadow_error = exc
            err_console.print(
                f"[bold red]error:[/] {safe(exc)}; auditing with eis's zoo records instead",
                highlight=False,
                soft_wrap=True,
            )
    elif train_data is not None or recipe or trainer:
        raise EisError("--train-data, --recipe and --train go with --shadows N")
    elif calibration is not None and arch:
        table = reuse_shadow_table(calibration, arch, arch_kwargs, mean, std)
    report = eis.audit.audit(
        model,
        x,
        y,
        inputs=xs,
        input_names=names,
        calibration=table,
        detectors=chosen,
        settings=tool_settings,
        seed=seed,
    )
    html, js = report.write(out)
    for line in report.summary():  # file names, tools' errors: shown as they are, never as markup
        console.print(safe(line), highlight=False, soft_wrap=True)
    console.print(
        f"audit written to {safe(html.resolve())} and {safe(js.name)}", highlight=False, soft_wrap=True
    )
    if shadow_error is not None:
        raise typer.Exit(code=2)
    if fail_on_suspect and report.suspicious:
        raise typer.Exit(code=1)


def audit_lm_cli(
    model_dir: Path, data: Path, targets: Path | None, out: Path, trust_pickle: bool, seed: int, fail: bool
) -> None:
    """``eis audit --lm``: see :mod:`eis.audit.lm`."""
    import torch

    from eis.audit.lm import audit_lm, read_lines

    target_list = [] if targets is None else read_lines(targets, "--targets")
    texts = read_lines(data, "--data")
    torch.manual_seed(seed)
    report = audit_lm(model_dir, None, target_list, texts, trust_pickle=trust_pickle, seed=seed)
    html, js = report.write(out)
    for line in report.summary():
        console.print(safe(line), highlight=False, soft_wrap=True)
    console.print(
        f"audit written to {safe(html.resolve())} and {safe(js.name)}", highlight=False, soft_wrap=True
    )
    if fail and report.suspicious:
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
    suites: str = typer.Option(None, "--suites", help="Comma-separated suites the store's runs came from."),
    note: str = typer.Option("", "--note", help="A sentence kept in the table (e.g. how it was made)."),
    shadows: int = typer.Option(
        None, "--shadows", min=2, help="Measure on N clean + N flawed shadows of MODEL's architecture."
    ),
    model_path: Path = typer.Option(None, "--model", help="With --shadows: the model the shadows are like."),
    arch: str = typer.Option(None, "--arch", help="Factory: package.module:function or file.py:function."),
    arch_kwargs: str = typer.Option(None, "--arch-kwargs", help="JSON keyword arguments for the factory."),
    data: Path = typer.Option(None, "--data", help="With --shadows: clean labelled held-out examples."),
    train_data: Path = typer.Option(None, "--train-data", help="Labelled training data for the shadows."),
    mean: str = typer.Option(None, "--mean", help="Per-channel normalisation mean, e.g. 0.5,0.5,0.5."),
    std: str = typer.Option(None, "--std", help="Per-channel normalisation std."),
    size: int = typer.Option(None, "--size", min=1, help="Resize images to SIZE x SIZE."),
    recipe: list[str] = typer.Option(None, "--recipe", help=RECIPE_HELP),
    trainer: str = typer.Option(None, "--train", help=TRAIN_HELP),
    detectors: str = typer.Option(
        None, "--detectors", help="Comma-separated detection tools (default: all)."
    ),
    nc_steps: int = typer.Option(None, "--nc-steps", min=1, help="Neural Cleanse steps (default 300)."),
    workers: int = typer.Option(None, "--workers", min=0, help=WORKERS_HELP, show_default=False),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Build the calibration table (each tool's track record) from one or more results stores, or, with
    --shadows, from shadow models like MODEL (a table `eis audit --calibration` reuses)."""
    from eis.audit import build_calibration, save_calibration
    from eis.results.store import open_store

    if shadows is not None:
        import torch

        from eis.health import check_model
        from eis.plugins import load_plugins
        from eis.usermodel import check_compatible, load_examples

        load_plugins()
        if model_path is None or data is None:
            raise EisError(
                "--shadows needs --model (the model the shadows are like) and --data (its examples)"
            )
        torch.manual_seed(0)
        model = user_model(model_path, arch, arch_kwargs, False, mean, std)
        x, y, _ = load_examples(data, size=size)
        run = run_shadows(
            shadows=shadows, recipe=recipe, trainer=trainer, arch=arch, arch_kwargs=arch_kwargs, mean=mean,
            std=std, train_data=train_data, size=size, x=x, y=y, num_classes=check_compatible(model, x, y),
            user_accuracy=check_model(model, x, y).accuracy,
            detectors=detectors.split(",") if detectors else None,
            settings={"neural_cleanse": {"steps": nc_steps}} if nc_steps else None, workers=workers,
            device=device, backend=backend, address=address,
        )  # fmt: skip
        path = save_calibration(run.table, out)
        console.print(f"shadow calibration table written to {safe(path)}", highlight=False, soft_wrap=True)
        return
    if not suites:
        raise EisError("--suites is required (the suites the store's runs came from), or use --shadows N")
    records: dict[str, dict] = {}
    for path in store or [None]:
        with open_store(path, create=False) as st:
            for rec in st.records():
                records.setdefault(rec["key"], rec)
    table = build_calibration(list(records.values()), suites=suites.split(","), note=note)
    path = save_calibration(table, out)
    console.print(
        f"calibration table for {len(table['detectors'])} detectors written to {safe(path)}", highlight=False
    )


def reuse_shadow_table(
    path: Path, arch: str, arch_kwargs: str | None, mean: str | None, std: str | None
) -> dict:
    """A calibration table from ``path``; for a shadow table made with this very factory, the factory is
    registered again so that the learned detectors fitted on its shadows apply."""
    from eis.audit import load_calibration
    from eis.shadows import UserArch
    from eis.shadows.setup import register_arch

    table = load_calibration(path)
    made = (table.get("shadows") or {}).get("arch") or {}
    user_arch = UserArch.of(arch, json_object(arch_kwargs, "--arch-kwargs"), floats(mean, "--mean"),
                            floats(std, "--std"))  # fmt: skip
    if made.get("name") and made.get("factory") == arch and user_arch.name == made["name"]:
        register_arch(user_arch)
    return table
