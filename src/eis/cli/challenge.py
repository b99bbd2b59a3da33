"""``eis challenge``: take the mechanist challenge yourself (a network, its inputs, a hint; no rule)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eis.cli import app
from eis.cli.common import console, safe, user_errors

challenge_app = typer.Typer(
    help="The mechanist challenge: recover a network's secret rule.", no_args_is_help=True
)
app.add_typer(challenge_app, name="challenge")


@challenge_app.command("new")
@user_errors
def new(
    seed: int = typer.Option(..., "--seed", min=0, help="Draws the rule family (seed mod 6) and the rule."),
    out: Path = typer.Option(..., "--out", help="A new folder for the challenge."),
    family: str = typer.Option(None, "--family", help="Choose the rule family instead (see the README)."),
    p: int = typer.Option(59, "--p", help="Token rules: pairs in Z_p (11 to 127)."),
) -> None:
    """Write a challenge to DIR: the network, its training inputs and hints; the rule stays in the cache."""
    import json

    import eis.challenge

    with console.status(f"building challenge {seed} (cached after the first time) ..."):
        folder = eis.challenge.new_challenge(seed, out, family, p)
    hints = json.loads((folder / "challenge.json").read_text())
    console.print(
        f"[green]challenge written to {safe(folder)}[/]: family {safe(hints['family'])} "
        f"({safe(hints['family_sentence'])}); network accuracy {hints['network_accuracy']:.3f}"
    )
    console.print(f"write rule.py with label(x), then: eis challenge score {safe(folder)} rule.py")


@challenge_app.command("score")
@user_errors
def score(
    folder: Path = typer.Argument(..., metavar="DIR", help="A folder written by `eis challenge new`."),
    rule_file: Path = typer.Argument(..., metavar="RULE.py", help="Python file defining label(x)."),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds RULE.py may run (child process)."),
) -> None:
    """Score RULE.py's label(x) against the sealed rule: fresh, network-wrong and off-distribution inputs."""
    import eis.challenge

    scores = eis.challenge.score_submission(folder, rule_file, timeout)
    table = Table("score", "value")
    for key, value in scores.items():
        table.add_row(key, f"{value:.0f}" if key in ("n_net_wrong", "description_bytes") else f"{value:.3f}")
    console.print(table)
