"""The examples run as a user runs them (subprocesses, tiny settings), and the reports of their stores open in
chromium: the slider moves through the snapshots, the loop's scalars are drawn, no console errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnscope.track import TrackStore
from test_report_browser import ARGS, CHROMIUM, _browser_or_explain

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n", "96", "--epochs", "2", "--batch-size", "32", "--size", "32", "--widths", "4,8", "--probe", "8"]
EXAMPLES = {  # script → its tiny arguments, the steps it records, the scalars it logs, their charts in the report
    "own_loop.py": (TINY + ["--n-test", "32"], [0, 1, 2, 3, 4, 5, 6],
                    {"loss", "guide", "train_acc", "test_acc", "clean_test_acc"},
                    {"loss", "guide", "acc", "clean_test_acc"}),
    "lightning_loop.py": (TINY + ["--n-val", "32", "--every", "2"], [0, 2, 3, 4, 6],
                          {"train_loss", "guide", "test_acc"}, {"loss", "guide", "acc"}),
}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("example") / "run"
    args, steps, scalars, charts = EXAMPLES[request.param]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / request.param), "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out / 'report.html'}" in done.stdout
    return out, steps, scalars, charts


@pytest.mark.slow
def test_the_example_records_its_snapshots_and_scalars(example):
    out, steps, scalars, _ = example
    store = TrackStore.open(out / "track")
    assert [e["step"] for e in store.snapshots] == steps
    assert [e["kind"] for e in store.snapshots if e["step"] in (0, 3, 6)] == ["epoch"] * 3
    rows = store.scalars()
    assert {k for r in rows for k in r} == scalars | {"step", "epoch"}
    assert all(0 <= r["guide"] <= 1 for r in rows)  # the share of Grad-CAM mass outside the box
    assert set(store.probe().regions) == {"box", "decoy"}


@pytest.mark.slow
def test_the_examples_report_opens_and_its_slider_moves(example):
    sync_playwright = _browser_or_explain()
    out, steps, _, charts = example
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto((out / "report.html").as_uri())
            slider, label, shown = page.locator("#frame-slider"), page.locator("#frame-label"), page.locator("#map-0")
            assert slider.input_value() == str(len(steps) - 1) and label.inner_text().startswith("epoch 2 (step 6)")
            logged = page.locator("h2:has-text('Logged during training') + p + div.charts svg.chart")
            assert {c.get_attribute("aria-label") for c in logged.all()} == charts
            cursor = page.locator("svg.chart[data-cursor] line.cursor").last  # a measure's chart, from epoch 0
            last_src, last_x = shown.get_attribute("src"), float(cursor.get_attribute("x1"))
            slider.focus()
            page.keyboard.press("Home")
            assert label.inner_text().startswith("epoch 0 (step 0)") and shown.get_attribute("src") != last_src
            first_x = float(cursor.get_attribute("x1"))
            page.keyboard.press("ArrowRight")
            assert label.inner_text().startswith(f"epoch {steps[1] / 3:.2f} (step {steps[1]})")
            assert first_x < float(cursor.get_attribute("x1")) < last_x
        finally:
            browser.close()
    assert [p for p in problems if not p.startswith(("console log", "console info", "console debug"))] == []
