"""``eis zoo``: build, list and show the model zoo."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from eis.cli import app
from eis.cli.common import console, err_console, safe, user_errors
from eis.cli.listing import cached_rows, zoo_state
from eis.plugins import load_plugins
from eis.progress import LineProgress, progress_display
from eis.workers import check_backend, default_workers

if TYPE_CHECKING:  # eis.zoo imports torch: each command imports it when it runs, so `eis --help` stays fast
    import eis.zoo
    from eis.zoo.spec import CaseSpec

zoo_app = typer.Typer(help="Build, list and inspect the model zoo.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


WORKERS_HELP = "Worker processes, one torch thread each (default: one per core); 0 builds in this process."
DEVICE_HELP = "Where to train: auto (CUDA where present), cpu or cuda. The device is part of the case id."
BACKEND_HELP = "local (processes on this machine) or ray (Ray tasks; needs eis's ray extra)."
ADDRESS_HELP = "With --backend ray: the cluster to use (auto, ray://host:port); default: start a local one."


@contextlib.contextmanager
def build_progress(label: str, total: int) -> Iterator[Callable[[CaseSpec, float, bool], None]]:
    """An ``on_progress`` callback for a zoo build: a bar per case in training and one overall (plain
    periodic lines when not on a terminal)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with progress_display(err_console, *columns) as progress:
        markup = not isinstance(progress, LineProgress)  # plain lines print without markup
        overall = progress.add_task(safe(label, markup=markup), total=total)
        current: dict[str, int] = {}
        state = {"done": 0}

        def on_progress(spec: CaseSpec, fraction: float, hit: bool) -> None:
            if fraction >= 1.0:  # built or cached: reported once per case
                if spec.name in current:
                    progress.remove_task(current.pop(spec.name))
                state["done"] += 1
                progress.update(overall, completed=state["done"])
                return
            if spec.name not in current:
                current[spec.name] = progress.add_task(f"  {safe(spec.name, markup=markup)}", total=100)
            progress.update(current[spec.name], completed=int(fraction * 100))

        yield on_progress


def build_with_progress(
    suite: str,
    force: bool = False,
    *,
    workers: int | None = None,
    device: str = "auto",
    backend: str = "local",
    address: str | None = None,
) -> list[eis.zoo.Case]:
    """Build a suite with :func:`build_progress`; shared by `zoo build`, `bench` and `demo`."""
    import eis.zoo
    from eis.zoo.features.spec import source_models
    from eis.zoo.implant import bases

    specs = eis.zoo.suite_cases(suite)
    # built first: fine-tuning bases, and the models feature cases read (reported again, cached, later)
    first = len(bases(specs)) + len(source_models(specs))
    with build_progress(f"zoo {suite}", len(specs) + first) as on_progress:
        return eis.zoo.build_suite(
            suite,
            force=force,
            on_progress=on_progress,
            workers=default_workers() if workers is None else workers,
            device=device,
            backend=backend,
            address=address,
        )


@zoo_app.command("build")
@user_errors
def build(
    suite: str = typer.Argument(..., help="Suite name (see `eis zoo suites`) or path to a suite .toml file."),
    force: bool = typer.Option(False, "--force", help="Retrain even when a cached artifact exists."),
    workers: int = typer.Option(None, "--workers", min=0, help=WORKERS_HELP, show_default=False),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Train every case of SUITE that is not cached yet and check its bars."""
    import eis.zoo
    from eis.zoo.build import BarError

    check_backend(backend)
    load_plugins()
    try:
        cases = build_with_progress(
            suite, force, workers=workers, device=device, backend=backend, address=address
        )
    except BarError as exc:
        for miss in exc.misses:
            err_console.print(f"[bold red]bar missed:[/] {safe(miss)}", highlight=False)
        raise typer.Exit(code=1) from None
    where = safe(eis.zoo.artifact.zoo_dir())
    console.print(f"[green]built {len(cases)} cases[/] of suite {safe(repr(suite))} under {where}")


@zoo_app.command("suites")
@user_errors
def suites() -> None:
    """List the built-in suites (reading a suite checks its specs; it builds no data)."""
    for name, count in cached_rows("suites", _suite_rows, unless_imported="eis.zoo"):
        console.print(f"{safe(name)}: {count} cases")


def _suite_rows() -> list[list]:
    import eis.zoo

    load_plugins()
    return [[name, len(eis.zoo.suite_cases(name))] for name in eis.zoo.builtin_suites()]


@zoo_app.command("list")
@user_errors
def list_cases() -> None:
    """List the built cases in the cache (visible metadata only)."""
    table = Table()  # names and ids are never wrapped or cut, at any terminal width
    table.add_column("name", no_wrap=True)
    table.add_column("id", no_wrap=True)
    for column in ("dataset", "arch", "population", "clean acc."):
        table.add_column(column, overflow="fold")
    for row in cached_rows("zoo-list", _case_rows, state=zoo_state(), unless_imported="eis.zoo"):
        table.add_row(*(safe(cell) for cell in row))
    console.print(table)


def _case_rows() -> list[list[str]]:
    import eis.zoo

    load_plugins()  # cases of kinds added by plugins open only once their kind is registered
    return [
        [
            case.name,
            case.id,
            case.dataset,
            case.arch,
            case.meta.get("population") or "",
            f"{case.meta['clean_accuracy']:.3f}" if "clean_accuracy" in case.meta else "",
        ]
        for case in eis.zoo.list_built()
    ]


@zoo_app.command("show")
@user_errors
def show(
    case: str = typer.Argument(..., help="Case name or id."),
    out: Path = typer.Option(None, "--out", help="Where to write the PNG grid (default: ./<case>.png)."),
) -> None:
    """Show a case's spec and measured bars, and write a PNG grid of clean vs triggered inputs with masks."""
    import eis.zoo
    from eis.zoo.kinds import IMAGE, kind_of
    from eis.zoo.show import render_grid

    load_plugins()
    c = eis.zoo.load(case)
    table = Table("field", "value", show_header=False)
    for key, value in c.describe():
        table.add_row(safe(key), safe(value))
    console.print(table)
    if kind_of(c) != IMAGE:  # compiled transformers, rule networks, language models, feature sets
        return
    path = render_grid(c, out or Path(f"{c.name}.png"))
    console.print(f"grid written to {safe(path)}", highlight=False)
