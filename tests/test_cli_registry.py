"""`eis tools` and `eis tracks` list the one registry."""

from __future__ import annotations

from typer.testing import CliRunner

from eis.cli import app
from eis.tools import list_tools


def test_tools_lists_every_registered_tool_and_marks_controls():
    result = CliRunner().invoke(app, ["tools"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in list_tools():
        assert name in result.output
    assert "edge_detector" in result.output and "yes" in result.output


def test_tools_rejects_an_unknown_family():
    result = CliRunner().invoke(app, ["tools", "--family", "vision"])
    assert result.exit_code == 2
    assert "unknown family 'vision'; valid: attribution, " in result.output


def test_tracks_lists_the_five_tracks():
    result = CliRunner().invoke(app, ["tracks"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in ("localize", "sanity", "faithfulness", "detect", "synthesize"):
        assert name in result.output


def test_names_are_whole_on_a_narrow_terminal(monkeypatch):
    """At 80 columns the settings fold; no tool or track name is wrapped or cut."""
    from eis.cli.common import console
    from eis.tracks.base import TRACKS

    monkeypatch.setattr(console, "width", 80)
    tools = CliRunner().invoke(app, ["tools"])
    tracks = CliRunner().invoke(app, ["tracks"])
    assert tools.exit_code == tracks.exit_code == 0
    for name in list_tools():
        assert name in tools.output, name
    for name in TRACKS.names():
        assert name in tracks.output, name
