"""`bench/dataset_throughput.py`'s leaderboard part times the leaderboard `attnscope bench --stream` computes
with no --methods/--metrics: on a tiny model and 2 images both give the same columns, rows and values."""

import json
import sys
from pathlib import Path

import torch

import attnscope as ats
from attnscope.cli import main
from attnscope.models import checkpoint
from attnscope.stream import NamedData

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import dataset_throughput  # noqa: E402


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "ms_per_image"} for row in rows]


def test_the_leaderboard_part_runs_the_default_streamed_leaderboard(tmp_path) -> None:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8]).eval()
    config = {"size": 32}  # the checkpoint's data set at 32 px: the CLI streams what the part is given
    ckpt = checkpoint.save(model, tmp_path / "model.safetensors", {"data": "clutter", "data_cfg": config})
    try:
        main(["bench", "--checkpoint", str(ckpt), "--images", "clutter", "--n", "2", "--stream", "--out",
              str(tmp_path / "cli"), "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)
    cli = json.loads((tmp_path / "cli" / "leaderboard.json").read_text())
    data = NamedData("clutter", 2, 0, config=config)
    part = dataset_throughput.default_leaderboard(model, data, tmp_path / "part", 2)
    assert part["meta"]["columns"] == cli["meta"]["columns"]
    assert [r["method"] for r in part["rows"]] == [r["method"] for r in cli["rows"]]
    assert len(part["rows"]) > 25  # every applicable method and the calibration rows, not a subset
    assert _without_time(part["rows"]) == _without_time(cli["rows"])
    assert part["ci"] == cli["ci"]
    assert cli["meta"]["data_cfg"] == config
