"""The HTML report in a real headless browser: loads without console errors, one leaderboard row per tool."""

from __future__ import annotations

from pathlib import Path

import bench_fakes as bf
import pytest

from eis.report import write_report
from eis.runner import run_benchmark

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: apt-get install -y chromium"),
]


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = tmp_path / "r.sqlite"
    tools = ["fake-oracle", "fake-grad", "fake-raise"]
    run_benchmark(bf.make_cases(4), tools, ["fake-localize", "fake-spread"], workers=0, store=store)
    report = write_report(store, tmp_path / "report")
    shot = tmp_path / "shots" / "report.png"
    shot.parent.mkdir()
    errors: list[str] = []
    requests: list[str] = []
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            assert page.title() == "eis report"
            rows = page.locator('table.leaderboard[data-track="fake-localize"] tbody tr')
            assert rows.count() == len(tools) + 2  # + the two controls
            assert page.locator('table.leaderboard[data-track="fake-localize"] tbody tr.control').count() == 2
            assert (
                page.locator('table.leaderboard[data-track="fake-spread"] tbody tr').count() == len(tools) + 2
            )
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
            )
            assert broken == 0 and page.evaluate("document.images.length") > 10
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing fetched from a network
    assert shot.stat().st_size > 10_000
