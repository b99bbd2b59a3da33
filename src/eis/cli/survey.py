"""``eis survey``: the synthesis track's 8-way questions as an HTML page for people, and scoring answers."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from eis.cli import app
from eis.cli.common import console, err_console, safe, user_errors

survey_app = typer.Typer(
    help="Write the synthesis survey page (`eis survey --out FILE`) or score answers (`eis survey score`).",
    invoke_without_command=True,
)
app.add_typer(survey_app, name="survey")


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@survey_app.callback()
@user_errors
def survey(
    ctx: typer.Context,
    out: Path = typer.Option(Path("eis-survey.html"), "--out", "-o", help="Where to write the HTML page."),
    suite: str = typer.Option(
        "smoke", help="Zoo suite whose trojaned cases are asked about (built if needed)."
    ),
    tools: str | None = typer.Option(
        None, help="Comma-separated synthesis tools (default: all, controls too)."
    ),
    cases: str | None = typer.Option(
        None, help="Comma-separated case names to keep (default: all that apply)."
    ),
    n_images: int = typer.Option(10, help="Images per question (the tools' n_images)."),
    seed: int = typer.Option(0, help="Seed of the tools and of the question order."),
) -> None:
    """Write a self-contained HTML survey: each question shows a tool's images and the 8 options."""
    if ctx.invoked_subcommand is not None:
        return
    import eis.zoo
    from eis.survey import build_survey, write_survey
    from eis.tools.base import list_tools, make_tool

    names = _split(tools) or list_tools("synthesis")
    valid = set(list_tools("synthesis"))
    for name in names:
        if name not in valid:
            from eis.errors import unknown

            raise unknown("synthesis tool", name, valid)
    tool_objs = [make_tool(n, n_images=n_images) for n in names]
    built = eis.zoo.build_suite(suite)
    keep = _split(cases)
    if keep:
        built = [c for c in built if c.name in keep]
    err_console.print(f"running {len(tool_objs)} tools on the trojaned cases of {safe(repr(suite))} ...")
    items = build_survey(built, tool_objs, seed=seed)
    path = write_survey(items, out)
    console.print(f"wrote {len(items)} questions to {safe(path)}")


@survey_app.command("score")
@user_errors
def score(
    answers: Path = typer.Argument(..., help="The answers JSON exported from the survey page."),
    json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Score a person's exported answers like the judge: accuracy overall, per tool and per trojan kind."""
    from eis.survey import load_answers, score_answers

    result = score_answers(load_answers(answers))
    if json_out:
        console.print_json(json.dumps(result))
        return
    table = Table(title=f"survey answers (chance {result['chance']:.3f})")
    for col in ("group", "answered", "correct", "accuracy"):
        table.add_column(col)
    rows = [("all", result)] + [(f"tool {k}", v) for k, v in result["per_tool"].items()]
    rows += [(f"kind {k}", v) for k, v in result["per_kind"].items()]
    for name, r in rows:
        table.add_row(safe(name), str(r["n"]), str(r["correct"]), f"{r['accuracy']:.3f}")
    console.print(table)
    console.print(f"accuracy: {result['accuracy']:.3f} ({result['correct']}/{result['n']})")
