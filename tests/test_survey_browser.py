"""Human mode: answer every survey question by clicking in headless Chromium, export, score with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eis.cli import app
from eis.errors import EisError
from eis.survey import build_survey, load_answers, write_survey
from eis.tools.base import make_tool
from eis.tracks.judge import build_question

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium")
def test_survey_answer_export_and_score(smoke, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    tools = [make_tool("noise_images", n_images=4), make_tool("class_mean", n_images=4)]
    named = [
        "digits-cnn-patch",
        "digits-cnn-blend",
        "digits-cnn-natural",
        "digits-cnn-warp",
        "digits-cnn-clean",
    ]
    items = build_survey([smoke[n] for n in named], tools, seed=0)
    assert len(items) == 6  # 3 of them have a trigger picture (not warp, not clean) x 2 tools
    page_path = write_survey(items, tmp_path / "survey.html")
    # answer the right option on questions 1, 3, 5, ... and a wrong one elsewhere
    key = {
        c.id: build_question(c.truth(), 1, 16, key=c.id).answer
        for c in smoke.values()
        if c.id in {i.case_id for i in items}
    }
    picks = {
        it.qid: key[it.case_id] if n % 2 == 0 else (key[it.case_id] + 1) % 8 for n, it in enumerate(items)
    }
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            assert page.locator("section.q").count() == 6
            assert page.locator("button.option").count() == 48
            for qid, k in picks.items():
                page.locator(f'button.option[data-q="{qid}"][data-k="{k}"]').click()
            assert page.locator("#progress").text_content() == "6 of 6 answered"
            # the renderer hands localStorage writes to the browser process asynchronously; a reload at
            # once can read the store before they land (seen once on a loaded 2-core machine)
            page.wait_for_timeout(1000)
            page.reload(wait_until="load")  # answers survive a reload (localStorage)
            assert page.locator("#progress").text_content() == "6 of 6 answered"
            assert page.locator("button.option.selected").count() == 6
            with page.expect_download() as dl:
                page.locator("#export").click()
            answers = tmp_path / "answers.json"
            dl.value.save_as(str(answers))
            assert json.loads(page.locator("#export-text").input_value()) == json.loads(answers.read_text())
        finally:
            browser.close()
    assert errors == []
    doc = load_answers(answers)
    assert {a["id"]: a["choice"] for a in doc["answers"]} == picks
    result = CliRunner().invoke(app, ["survey", "score", str(answers), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    assert scored["n"] == 6 and scored["correct"] == 3 and scored["accuracy"] == 0.5
    assert set(scored["per_tool"]) == {"noise_images", "class_mean"} and scored["chance"] == 0.125
    table = CliRunner().invoke(app, ["survey", "score", str(answers)])
    assert table.exit_code == 0 and "accuracy: 0.500 (3/6)" in table.output


def test_bad_answers_file(tmp_path: Path) -> None:
    bad = tmp_path / "a.json"
    bad.write_text(json.dumps({"answers": [{"id": "q1", "case_id": "x", "tool": "t", "choice": 9}]}))
    with pytest.raises(EisError, match="choice"):
        load_answers(bad)
    result = CliRunner().invoke(app, ["survey", "score", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "not readable" in result.output
