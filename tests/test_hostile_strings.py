"""Untrusted strings: names of cases, suites, screened files and class folders, tools' settings and errors,
a challenge submission's output. They must reach every HTML page escaped (no tag, no event handler, no
script the page did not put there), every terminal line escaped (rich markup shown as text, control
characters as ``\\xNN``: no ANSI escape reaches the terminal) and never become a path outside EIS_HOME.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import bench_fakes
import pytest
import torch
from rich.console import Console
from tiny_user_model import make_user_model, write_images
from typer.testing import CliRunner

from eis.cli import app
from eis.cli.common import safe
from eis.errors import EisError, ToolRefusal
from eis.runner.plugins import SUITES, register_suite
from eis.tools.base import TOOLS

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=1>',
    "[bold red]x[/]",
    "\x1b[31mred\x1b[0m",
    "line\nbreak",
    "../../etc",
]
ALL = " | ".join(HOSTILE)
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# -- checks ---------------------------------------------------------------------------------------------
class _Tags(HTMLParser):
    """Every tag and attribute of a page, and those that could run code or fetch something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.bad: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key.startswith("on") or (
                key in ("src", "href") and not (value or "").startswith(("data:", "#"))
            ):
                self.bad.append((tag, key, value))


def assert_inert(page: str, scripts: int = 0) -> None:
    """No tag, attribute or script in ``page`` came from a hostile string."""
    tags = _Tags()
    tags.feed(page)
    assert tags.tags.count("script") == scripts and not tags.bad, tags.bad
    if not scripts:  # (inside a page's own JSON data block, the strings are data, not markup)
        assert "<script>alert(1)</script>" not in page and "<img src=x" not in page


def assert_terminal_safe(output: str) -> None:
    """No ANSI escape from a hostile string reached the terminal; its markup shows as text."""
    assert "\x1b" not in output, output


# -- the terminal helper --------------------------------------------------------------------------------
def test_safe_shows_markup_and_control_characters_as_text() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=400, force_terminal=False)
    for s in HOSTILE:
        console.print(f"[bold]name:[/] {safe(s)}", highlight=False, soft_wrap=True)
    lines = buf.getvalue().splitlines()
    assert len(lines) == len(HOSTILE)  # a newline in a name does not start a line of its own
    assert lines[2] == "name: [bold red]x[/]" and lines[3] == "name: \\x1b[31mred\\x1b[0m"
    assert lines[4] == "name: line\\nbreak" and lines[0] == "name: <script>alert(1)</script>"
    assert_terminal_safe(buf.getvalue())
    assert safe("[x]\x1b", markup=False) == "[x]\\x1b"


# -- bench and the HTML report --------------------------------------------------------------------------
@dataclasses.dataclass
class HostileTool(bench_fakes._FakeTool):
    """A tool whose setting and error are hostile strings."""

    name: ClassVar[str] = "fake-hostile"
    note: str = ALL

    def attribute(self, model, inputs, target):
        raise RuntimeError(self.note)


@dataclasses.dataclass
class RefusingTool(bench_fakes._FakeTool):
    name: ClassVar[str] = "fake-hostile-refusal"
    note: str = ALL

    def attribute(self, model, inputs, target):
        raise ToolRefusal(self.note.replace("\n", " "))


for _cls in (HostileTool, RefusingTool):
    if _cls.name not in TOOLS:
        TOOLS.register(_cls.name, _cls)


def hostile_cases() -> list[bench_fakes.FakeCase]:
    flaws = ("patch", "blend", "clean")
    return [
        bench_fakes.FakeCase(id=f"fakehost{i:04x}", name=s, flaw=flaws[i % 3]) for i, s in enumerate(HOSTILE)
    ]


if "fake-hostile-suite" not in SUITES:
    register_suite("fake-hostile-suite", hostile_cases)


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> tuple[Path, str]:
    """A store benched from cases with hostile names, with a hostile tool's failures and refusals."""
    store = tmp_path_factory.mktemp("hostile") / "r.sqlite"
    tools = "fake-oracle,fake-hostile,fake-hostile-refusal"
    res = invoke("bench", "fake-hostile-suite", "--tracks", "fake-localize,fake-spread", "--tools", tools,
                 "--workers", "0", "--store", store)  # fmt: skip
    assert res.exit_code == 0, res.output
    return store, res.output


def test_bench_summary_prints_hostile_names_and_errors_as_text(hostile_store) -> None:
    _, output = hostile_store
    assert_terminal_safe(output)
    failed = [ln for ln in output.splitlines() if ln.startswith("  failed ")]
    assert len(failed) == 10  # 10 failed cells (4 localize + 6 spread), one line each: no forged lines
    assert any("· [bold red]x[/]: RuntimeError: <script>alert(1)</script>" in ln for ln in failed), failed
    assert all(ln.count("line\\nbreak") >= 1 for ln in failed)  # the error's own newline, shown as \n
    refused = [ln for ln in output.splitlines() if ln.startswith("  not applicable ")]
    assert refused and all("\\x1b[31mred" in ln for ln in refused)


def test_report_escapes_case_names_errors_and_reasons(hostile_store, tmp_path) -> None:
    from eis.report import build_report_data
    from eis.report.html import render_html

    store, _ = hostile_store
    page = render_html(build_report_data(store))
    assert_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "&quot;&gt;&lt;img src=x onerror=1&gt;" in page
    for name in HOSTILE[:2]:  # in the gallery's data-case attribute and the failure tables
        assert f'data-case="{name}"' not in page
    res = invoke("report", "--store", store, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert_inert((tmp_path / "rep" / "index.html").read_text())
    assert_terminal_safe(res.output)


def test_results_info_escapes_what_the_store_holds(tmp_path) -> None:
    """A store is input too: a track name in it is shown as text by `eis results info`."""
    from eis.results.store import Store

    store = tmp_path / "r.sqlite"
    with Store(store) as st:
        for i, track in enumerate(["[bold red]x[/]", "[/]", "\x1b[2J"]):
            st.put({"key": f"k{i}", "case_id": "c", "tool": "t", "track": track, "status": "ok"})
    res = invoke("results", "info", "--store", store)
    assert res.exit_code == 0, res.output
    assert "[bold red]x[/]" in res.output and "\\x1b[2J" in res.output
    assert_terminal_safe(res.output)


# -- audit: screened file names and class folders -------------------------------------------------------
SCREEN_DIRS = ["<script>alert(1)<", "[bold red]x"]  # folder names: no "/" possible
SCREEN_FILES = ['"><img src=x onerror=1>.png', "\x1b[31mred.png", "line\nbreak.png", "[link=file:x]y.png"]


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    root = make_user_model(tmp_path_factory.mktemp("user"))
    write_images(root / "screen", [f"{d}/{f}" for d in SCREEN_DIRS for f in SCREEN_FILES])
    return root


def test_audit_page_and_terminal_escape_screened_file_and_folder_names(user, tmp_path) -> None:
    out = tmp_path / "audit"
    res = invoke("audit", user / "model.safetensors", "--arch", f"{user / 'nets.py'}:tiny", "--data",
                 user / "clean.npz", "--inputs", user / "screen", "--out", out, "--nc-steps", "10",
                 "--detectors", "strip,specificity")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "audit.json").read_text())
    names = {r["file"] for r in report["inputs"]}
    assert names == {f"{d}/{f}" for d in SCREEN_DIRS for f in SCREEN_FILES}  # kept as they are, in the JSON
    page = (out / "audit.html").read_text()
    assert_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/" in page and "&quot;&gt;&lt;img src=x onerror=1&gt;.png" in page
    assert_terminal_safe(res.output)
    top = next(ln for ln in res.output.splitlines() if "most suspicious inputs" in ln)
    assert "[bold red]x/" in top or "<script>alert(1)</" in top  # shown as text
    assert not list(out.glob(".*"))  # no temporary file left beside the outputs


def test_audit_refuses_a_hostile_detector_name_in_one_line(user, tmp_path) -> None:
    res = invoke("audit", user / "model.safetensors", "--arch", f"{user / 'nets.py'}:tiny", "--data",
                 user / "clean.npz", "--out", tmp_path / "a", "--detectors", ALL)  # fmt: skip
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("error: unknown tool '<script>"), res.output
    assert "[bold red]x[/] | \\x1b[31mred\\x1b[0m | line\\nbreak" in errors[0]
    assert_terminal_safe(res.output)


# -- repair ---------------------------------------------------------------------------------------------
def test_repair_page_escapes_and_cli_refuses_a_hostile_method_in_one_line(user, tmp_path) -> None:
    from eis.repair import RepairReport

    report = RepairReport(method=ALL, settings={"note": ALL}, n_budget=1, n_validation=1, acc_before=0.5,
                          acc_after=0.5, details={ALL: ALL})  # fmt: skip
    page, js = report.write(tmp_path / "r")
    assert_inert(page.read_text())
    assert json.loads(js.read_text())["method"] == ALL
    res = invoke("repair", user / "model.safetensors", "--arch", f"{user / 'nets.py'}:tiny", "--data",
                 user / "clean.npz", "--out", tmp_path / "o",
                 "--method", "[bold red]x[/]\x1b[31m")  # fmt: skip
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown repair method '[bold red]x[/]\\x1b[31m'" in lines[0], res.output
    assert_terminal_safe(res.output)


# -- survey page and challenge submissions --------------------------------------------------------------
def test_survey_page_keeps_hostile_strings_inside_its_data() -> None:
    from eis.survey import SurveyItem, render_survey

    img = torch.rand(2, 1, 8, 8)
    items = [
        SurveyItem(
            qid=f"q{i + 1:03d}",
            case_id=s,
            case_name=s,
            tool=s,
            kind="patch",
            images=img,
            options=torch.rand(8, 1, 8, 8),
        )  # fmt: skip
        for i, s in enumerate(HOSTILE)
    ]
    page = render_survey(items)
    assert_inert(page, scripts=2)  # its own data block and its own code, nothing else
    data = re.search(r'<script type="application/json" id="survey-data">(.*?)</script>', page, re.S)
    assert data is not None
    questions = json.loads(data.group(1))["questions"]
    assert [q["tool"] for q in questions] == HOSTILE and [q["case_id"] for q in questions] == HOSTILE


def test_challenge_submission_output_is_one_escaped_line(fresh_home, tmp_path) -> None:
    from eis.zoo.build import build_case
    from eis.zoo.rules.spec import RuleSpec

    case, _ = build_case(RuleSpec("det", "stripes", seed=2, p=17, steps=60, bar=0.0))
    folder = tmp_path / "challenge"
    folder.mkdir()
    (folder / "challenge.json").write_text(json.dumps({"case_id": case.id, "kind": case.kind}))
    rule = tmp_path / "rule.py"
    rule.write_text(f"import sys\nprint({ALL!r}, file=sys.stderr)\nsys.exit({ALL.replace(chr(10), ' ')!r})\n")
    res = invoke("challenge", "score", folder, rule)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "rule.py" in lines[0], res.output
    assert "failed: " in lines[0], res.output
    assert "[bold red]x[/]" in lines[0] and "\\x1b[31mred" in lines[0]
    assert_terminal_safe(res.output)


# -- names that could become paths ----------------------------------------------------------------------
@pytest.mark.parametrize("table", ["case", "population"])
@pytest.mark.parametrize("name", HOSTILE + ["", ".hidden", "a/b", "x" * 101])
def test_suite_names_are_refused_in_one_line_before_anything_is_written(
    name: str, table: str, tmp_path, monkeypatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EIS_HOME", str(home))
    entry = 'flaw = { kind = "clean" }' if table == "case" else "clean = 1\nflawed = 1"
    suite = tmp_path / "s.toml"
    suite.write_text(f'[defaults]\ndataset = "digits"\narch = "cnn"\n\n[[{table}]]\n'
                     f"name = {json.dumps(name)}\n{entry}\n")  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir() if p != home)
    res = invoke("zoo", "build", suite, "--workers", "0")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{table} name " in lines[0] and "is not valid" in lines[0], res.output
    assert "letters, digits, '.', '_' or '-'" in lines[0]
    assert_terminal_safe(res.output)
    assert sorted(p.name for p in tmp_path.iterdir() if p != home) == before  # nothing beside EIS_HOME
    assert not (home / "zoo").exists() or not any((home / "zoo").iterdir())


def test_valid_names_still_load() -> None:
    from eis.zoo.suites import check_name

    for name in ("digits-cnn-patch", "rule_linear.mod-1", "A9", "x" * 100):
        check_name(name, "here")
    with pytest.raises(EisError, match="case name '..' is not valid"):
        check_name("..", "here")


def test_a_hostile_suite_path_or_name_is_one_escaped_line(tmp_path) -> None:
    bad = tmp_path / "[bold red]x[" / "]\x1b[31m.toml"  # the path reads [bold red]x[/]\x1b[31m.toml
    bad.parent.mkdir()
    bad.write_text("this is not toml = = \n")
    res = invoke("zoo", "build", bad, "--workers", "0")
    assert res.exit_code == 2 and "is not valid TOML" in res.output and "[bold red]x[/]" in res.output
    assert_terminal_safe(res.output)
    res = invoke("zoo", "build", "../../etc", "--workers", "0")
    assert res.exit_code == 2 and "unknown suite '../../etc'" in res.output, res.output


def test_case_ids_never_leave_the_zoo_folder(fresh_home) -> None:
    from eis.zoo import artifact

    assert artifact.case_dir("0123abcd0123abcd") == artifact.zoo_dir() / "0123abcd0123abcd"
    for bad in ("../../etc", "/tmp/x", "..", ".tmp-x", "a/b", "", "x\n"):
        with pytest.raises(EisError, match="is not valid"):
            artifact.case_dir(bad)
        with pytest.raises(EisError, match="is not valid"):
            artifact.unpack(bad, {})
    with pytest.raises(EisError, match="is not valid"):
        artifact.write_artifact("../escape", torch.nn.Linear(1, 1), {}, {}, {"none": torch.zeros(0)})
    assert not (fresh_home / "escape").exists() and not (fresh_home.parent / "escape").exists()
