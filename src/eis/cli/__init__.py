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


def main() -> None:
    """The ``eis`` entry point: ``app`` with usage errors (unknown option, missing argument, bad value)
    on one stderr line naming the command, exit 2, like every other bad input."""
    import sys

    try:
        code = app(prog_name="eis", standalone_mode=False)
    except typer.TyperException as exc:  # typer's click exceptions: usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as without this wrapper
            exc.show()
        else:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "eis"
            message = " ".join(exc.format_message().split())
            print(f"{where}: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
