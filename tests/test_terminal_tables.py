"""The bench, sanity and demo tables at 80 columns: every cell shown whole (3 significant digits, long names
elided in the middle, columns split over several tables when they do not fit)."""

from __future__ import annotations

import io
import math
import random

import pytest
from rich.console import Console

from attnscope import console
from attnscope.evaluate import COLUMNS
from attnscope.explain import list_methods
from attnscope.report import terminal


def _render(title, columns, rows, legend=None, width=80) -> str:
    out = Console(width=width, record=True, file=io.StringIO())
    console.table(title, columns, rows, legend, to=out)
    return out.export_text()


def _cells(text: str) -> list[list[str]]:
    """The cells of every table line (body and header), as shown."""
    return [[c.strip() for c in line.strip()[1:-1].split(line.strip()[0])]
            for line in text.splitlines() if line.strip()[:1] in ("│", "┃")]


def _check_whole(text: str, columns, rows, width=80) -> None:
    assert max(len(line) for line in text.splitlines()) <= width
    shown = {c for line in _cells(text) for c in line}
    for c in columns:
        assert c in shown, f"header {c!r} cut"
    for row in rows:
        for v in row:
            assert console.elide_middle(console.cell(v), 24) in shown, f"cell {v!r} cut"


def test_cells_have_three_significant_digits():
    assert [console.cell(v) for v in (0.81249, 0.0012345, 12.345, 117.4, 1234.5, 7, float("nan"), None, "x")] == \
        ["0.812", "0.00123", "12.3", "117", "1234", "7", "–", "–", "x"]


def test_bench_tables_fit_80_columns_with_short_names_and_a_legend():
    rng = random.Random(0)
    names = [*list_methods(), "random", "sobel"]
    columns = list(COLUMNS)
    rows = [{"method": m, "kind": "perturbation", **{k: rng.uniform(-5, 100) for k in columns},
             "ms_per_image": rng.choice([1.13, 117.4, 1234.5, math.nan])} for m in names]
    tables = terminal.leaderboard_tables(rows, columns, ["deletion_zero", "complexity"], 32, "clutter")
    groups = [t[0].split(":")[0] for t in tables]
    assert groups == list(dict.fromkeys(COLUMNS.get(c).group for c in columns)) + ["time"]
    for title, short, cells, legend in tables:
        text = _render(title, short, cells, legend)
        _check_whole(text, short, cells)
        parts = -(-len(short) // 6)  # a table splits at most into parts of 6 columns (method + 5), never squeezed
        assert f"({parts + 1}/" not in text
    faithfulness = " ".join(_render(*tables[groups.index("faithfulness")]).split())
    assert "del0↓: deletion AUC, zero fill" in faithfulness and "↓: lower is better" in faithfulness


def test_sanity_table_keeps_neighbouring_block_names_apart():
    steps = ["fc", "features.3.1", "features.3.0", "layer4.1.downsample.0",
             "encoder.layers.encoder_layer_11.mlp.3", "encoder.layers.encoder_layer_10.mlp.3"]
    methods = ["gradcam", "saliency", "guided-backprop", "ig", "smoothgrad", "random", "sobel"]
    rows = [{"method": m, "block": s, "metric": "spearman_abs", "mean": 0.123456 * (i + 1) - j / 7}
            for i, m in enumerate(methods) for j, s in enumerate(steps)]
    title, columns, cells = terminal.sanity_table(rows, steps, "spearman_abs", {"test": "cascading", "images": 32})
    text = _render(title, columns, cells)
    _check_whole(text, columns, cells)
    first = [line[0] for line in _cells(text)]
    assert {"features.3.1", "features.3.0"} <= set(first)
    long = [c for c in first if "…" in c]
    assert len(set(long)) == 2  # the two long names elided in the middle, still distinct


def test_demo_table_fits_80_columns():
    methods = {m: {"pointing": 0.8125, "energy_in_box": 0.40625, "ms_per_image": 117.25} for m in list_methods()}
    methods["random (calibration)"] = {"pointing": 0.125, "energy_in_box": 0.0891, "ms_per_image": 0.0}
    title, columns, cells = terminal.demo_table({"test_acc": 0.986, "total_wall_s": 176.2, "methods": methods})
    _check_whole(_render(title, columns, cells), columns, cells)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_any_width_gets_whole_cells(width):
    columns = ["name", *(f"metric_{i}" for i in range(12))]
    rows = [["a-rather-long-method-name", *(i / 7 for i in range(12))]]
    _check_whole(_render("t", columns, rows, width=width), columns, rows, width)
