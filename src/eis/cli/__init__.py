"""The ``eis`` command line: a thin layer over the Python API, one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="eis",
    help="The Engineer's Interpretability Suite: score interpretability tools on models with planted flaws.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Import the command modules, each of which adds its commands to ``app``."""
    from eis.cli import audit, bench, challenge, demo, repair, report, results, survey, tools, zoo  # noqa: F401


_register()
