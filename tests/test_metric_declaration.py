"""A metric declares its column once: a function and its `declare(...)` in one file (`tests/new_metric.py`)
is a leaderboard column, a terminal-table header with its legend, a tracker measure and a report column."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch

import attnscope as ats
from attnscope import data, fileio, models
from attnscope.errors import InputError
from attnscope.evaluate import leaderboard
from attnscope.metrics import METRICS
from attnscope.report.terminal import leaderboard_tables
from attnscope.track import AttentionTracker


@pytest.fixture
def new_metric():
    """tests/new_metric.py imported: its column registered for this test only."""
    module = importlib.import_module("new_metric")
    yield module
    METRICS._items.pop("peak_in_box", None)  # the registry holds it until the test ends
    sys.modules.pop("new_metric", None)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.get("smallcnn", widths=[4, 8]).eval()
    ds = data.get("clutter", "test", 3, size=32, seed=1)
    images = torch.stack([ds[i].image for i in range(3)])
    labels = torch.tensor([ds[i].label for i in range(3)])
    boxes = torch.stack([ds[i].box for i in range(3)])
    return model, images, labels, boxes


def test_the_function_by_hand(new_metric):
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 1.0, 4.0  # peak outside the box: 1/4 of it inside
    maps[1, 1, 1] = 2.0  # peak inside: 1
    maps[2] -= 1.0  # no positive value: 0
    boxes = torch.tensor([[0, 0, 2, 2]] * 3)
    assert new_metric.peak_in_box(maps, boxes).tolist() == [0.25, 1.0, 0.0]


def test_a_declared_metric_is_a_column_a_measure_and_a_report_column(new_metric, setup, tmp_path):
    model, images, labels, boxes = setup
    assert ats.list("metrics", "peak*") == ["peak_in_box"]
    assert METRICS.get("peak_in_box").needs == "boxes"  # read off the parameter named `boxes`

    # bench's leaderboard: a column whose cells are the function's own numbers
    board = leaderboard(model, images, labels, boxes, how="gradcam", metrics="pointing,peak_in_box",
                        settings=ats.evaluate.Settings(calibration=(), keep_maps=True))
    assert board.columns == ["pointing", "peak_in_box"]
    expected = new_metric.peak_in_box(board.maps["gradcam"], boxes).mean().item()
    assert board.rows[0]["peak_in_box"] == pytest.approx(expected)
    assert "peak_in_box" in ats.evaluate.columns.select("localisation")

    # the terminal: its short header with its legend
    title, heads, cells, legend = leaderboard_tables(board.rows, board.columns, [], 3, "clutter")[0]
    assert heads == ["method", "point", "peak"] and legend["peak"] == "share of the map's peak reached in the box"

    # the tracker: a measure per region, recomputable from the stored maps
    tracker = AttentionTracker(tmp_path / "run", probe=(images, labels, boxes), how="gradcam",
                               measures=("pointing", "peak_in_box"))
    measures = tracker.epoch_end(model, epoch=0, step=0)
    tracker.close()
    assert set(measures) == {"probe_acc", "gradcam/pointing@box", "gradcam/peak_in_box@box"}
    stored = tracker.store.maps(0)["gradcam"]
    assert measures["gradcam/peak_in_box@box"] == pytest.approx(
        new_metric.peak_in_box(stored, boxes).double().mean().item(), abs=1e-6)

    # the report: the leaderboard's column headed by its legend (the short name and metric in the tooltip), in the
    # table of its group; the measure's chart
    fileio.write_text(tmp_path / "run" / "leaderboard.json", json.dumps({"rows": board.rows}))
    page = ats.report.build(tmp_path / "run").read_text()
    assert '<th title="peak (peak_in_box)">share of the map&#x27;s peak reached in the box</th>' in page
    assert "share of the map&#x27;s peak reached in the box @box" in page  # the measure's chart title


def test_the_tracker_refuses_what_it_cannot_recompute(setup, tmp_path):
    model, images, labels, boxes = setup
    for name, why in (("iou_mask", "needs masks"), ("focus", "other images")):
        with pytest.raises(InputError, match=why):
            AttentionTracker(tmp_path, probe=(images, labels, boxes), measures=("pointing", name))
    # a metric that asks the model is taken on it at the snapshot (not recomputable from the store's maps)
    AttentionTracker(tmp_path, probe=(images, labels, boxes), measures=("pointing", "deletion_zero"))
