"""The report in a real browser: Debian's chromium driven by Playwright, opened from disk.

Needs a chromium on PATH (`apt-get install chromium`; `make test` installs it when run as root, see
`.ci/ensure-chromium`) or ATTNSCOPE_CHROMIUM pointing at one. Without one the test is skipped, saying
what to install; set ATTNSCOPE_SKIP_BROWSER=1 to skip it on purpose. Playwright's own browser download
(`playwright install`) is never used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from attnscope.report import build
from tiny_runs import tracked_run

CHROMIUM = os.environ.get("ATTNSCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or ""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _browser_or_explain():
    if os.environ.get("ATTNSCOPE_SKIP_BROWSER") == "1":
        pytest.skip("ATTNSCOPE_SKIP_BROWSER=1")
    if not CHROMIUM or not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium {'at ' + CHROMIUM if CHROMIUM else 'on PATH'}: install it (sudo apt-get install "
                    "chromium) or point ATTNSCOPE_CHROMIUM at one to run this test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the playwright package (pip install playwright)", pytrace=False)
    return sync_playwright


@pytest.mark.slow
def test_epoch_slider_changes_the_shown_maps_without_console_errors(tmp_path):
    sync_playwright = _browser_or_explain()
    tracked_run(tmp_path / "run")
    report = build(tmp_path / "run")
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            slider, label, shown = page.locator("#frame-slider"), page.locator("#frame-label"), page.locator("#map-1")
            assert slider.input_value() == "6" and label.inner_text().startswith("epoch 3 (step 9)")
            last_src, last_pixels = shown.get_attribute("src"), shown.screenshot()

            slider.focus()
            page.keyboard.press("Home")  # the first snapshot: the untrained model at step 0
            assert slider.input_value() == "0" and label.inner_text().startswith("epoch 0 (step 0)")
            assert shown.get_attribute("src") != last_src and shown.screenshot() != last_pixels
            cursor = page.locator("svg.chart[data-cursor] line.cursor").first
            x_first = float(cursor.get_attribute("x1"))

            page.keyboard.press("ArrowRight")  # step 2, a within-epoch snapshot
            assert label.inner_text().startswith("epoch 0.67 (step 2)")
            assert float(cursor.get_attribute("x1")) > x_first
            cells = page.locator("#frame-measures tr").nth(2).locator("td")  # the gradcam row
            assert cells.nth(0).inner_text() == "gradcam" and cells.count() > 4
            assert page.locator("#frame-preds span").count() == 8
        finally:
            browser.close()
    assert [p for p in problems if not p.startswith(("console log", "console info", "console debug"))] == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
