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


def test_a_streamed_preset_is_the_streamed_leaderboard_of_its_settings(tmp_path) -> None:
    """`bench --stream --preset fast` scores the preset's methods and columns with its 3 copies and its curve steps
    in pixels of the streamed images' size (32 px: 1024 / 8 = 128), as the same options given in full do."""
    from attnscope.evaluate.presets import preset

    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8]).eval()
    ckpt = checkpoint.save(model, tmp_path / "model.safetensors", {"data": "clutter", "data_cfg": {"size": 32}})
    fast = preset("fast")
    common = ["bench", "--checkpoint", str(ckpt), "--images", "clutter", "--n", "2", "--stream", "--quiet"]
    for out, extra in (("preset", ["--preset", "fast"]),
                       ("full", ["--methods", ",".join(fast.methods), "--metrics", fast.metrics, "--step", "128",
                                 "--perturbations", "3"])):
        try:
            main([*common, "--out", str(tmp_path / out), *extra])
        except SystemExit as e:
            assert e.code in (0, None)
    a, b = (json.loads((tmp_path / out / "leaderboard.json").read_text()) for out in ("preset", "full"))
    assert [r["method"] for r in a["rows"]] == [*fast.methods, "random", "sobel"]
    assert a["meta"]["step"] == 128 and a["meta"]["perturbations"] == 3
    assert a["meta"]["columns"] == b["meta"]["columns"] and _without_time(a["rows"]) == _without_time(b["rows"])
