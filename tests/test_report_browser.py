"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` package) renders every figure and
table of a report, and the page asks for nothing outside itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from analysis_helpers import write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("BUDGET_REQUIRE_BROWSER"):
            pytest.fail("BUDGET_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_every_figure_and_table_of_a_report_renders_from_the_one_file(browser, tmp_path):
    from budget.report import build_report

    html = build_report(write_run(tmp_path / "run"), tmp_path / "report", target=0.7)
    alone = tmp_path / "mailed" / "report.html"  # the file alone, away from its figures folder
    alone.parent.mkdir()
    shutil.copy(html, alone)
    page = browser.new_page()
    requests, failures, errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: failures.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(Path(alone).as_uri(), wait_until="load")
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
    tables = page.eval_on_selector_all("table", "ts => ts.map(t => [t.rows.length, t.getBoundingClientRect().height])")
    markdown_figures = (html.parent / "report.md").read_text().count("![")
    assert len(images) == markdown_figures >= 3
    assert all(complete and natural > 0 and shown > 0 for complete, natural, shown in images)
    assert len(tables) >= 3 and all(rows > 1 and height > 0 for rows, height in tables)
    assert not failures and not errors
    assert all(url.startswith(("file://", "data:")) and (not url.startswith("file://") or url == alone.as_uri())
               for url in requests)  # fmt: skip
