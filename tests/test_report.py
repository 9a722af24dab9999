"""The HTML report: self-contained, one frame per snapshot, optional sections from what the run folder holds."""

from __future__ import annotations

import json
import re

import pytest

from attnscope import fileio
from attnscope.cli import main
from attnscope.report import build
from attnscope.report.charts import line_chart
from attnscope.report.html import pick_frames
from attnscope.track import TrackStore
from attnscope.train import fit
from tiny_runs import METHODS, tiny_config, tracked_run

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
SANITY_ROWS = [
    {"method": m, "block": b, "metric": "spearman_abs", "mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
    for m, base in (("gradcam", 0.9), ("saliency", 0.5)) for b, v in (("logits", base), ("block4", base / 2))
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    tracked_run(out)
    return out


def _frames(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="frames-data">(.*?)</script>', page, re.S)[1])


def test_report_is_one_self_contained_file_with_a_frame_per_snapshot(run_dir):
    page = build(run_dir).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page  # no CDN, no server
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img[^>]* src="([^"]+)"', page))
    data = _frames(page)
    store = TrackStore.open(run_dir / "track")
    assert [f["step"] for f in data["frames"]] == [e["step"] for e in store.snapshots] == [0, 2, 3, 4, 6, 8, 9]
    assert data["keys"] == list(METHODS)
    for key in METHODS:
        assert len(data["images"][key]) == 7 and data["images"][key][0] != data["images"][key][-1]
    assert 'id="frame-slider" min="0" max="6" value="6"' in page
    assert data["frames"][-1]["measures"] == store.snapshots[-1]["measures"]
    assert {"energy_box@box", "energy_box@decoy", "pointing@box", "entropy", "change"} <= set(data["measures"])
    for title in ("Training", "Maps during training", "Measures over training", "Configuration"):
        assert f"<h2>{title}</h2>" in page
    # Every tracked method: a row with its slider image and colour bar, and a strip of how its map changed.
    assert [f'id="map-{i}"' in page for i in range(4)] == [True, True, True, False]
    assert page.count('class="colorbar"') == 2 * len(METHODS) and page.count('class="strip"') == len(METHODS)
    assert "<h2>Sanity checks</h2>" not in page and "<h2>Leaderboard</h2>" not in page


def test_sanity_and_leaderboard_tables_are_picked_up_when_present(run_dir, tmp_path, capsys):
    # As `attnscope sanity --out` and `attnscope bench --out` write them (the leaderboard both as CSV and JSON).
    folder, elsewhere = tmp_path / "with_tables", tmp_path / "bench_out"
    fileio.write_json(folder / "sanity" / "sanity.json",
                      {"meta": {"test": "cascading"}, "steps": ["logits", "block4"], "rows": SANITY_ROWS})
    fileio.write_text(elsewhere / "leaderboard.csv", "method,pointing,energy\ngradcam,0.81,0.55\nig,0.62,0.4\n")
    fileio.write_json(elsewhere / "leaderboard.json", {"meta": {}, "rows": [{"method": "gradcam", "pointing": 0.81},
                                                                           {"method": "ig", "pointing": 0.62}]})
    fileio.write_json(folder / "unrelated.json", {"rows": [{"a": 1}]})  # not a sanity table: ignored
    fileio.write_bytes(folder / "sanity" / "sanity_maps_0.png", PNG)  # its map grid, as `attnscope sanity` names it
    page = build(folder, tmp_path / "r.html", extra=[elsewhere]).read_text()
    assert "<h2>Sanity checks</h2>" in page and page.count('<svg class="chart"') == 1
    assert "spearman_abs" in page and "0 = logits, 1 = block4" in page and "sanity.json (cascading)" in page
    assert page.count('<img class="grid"') == 1
    assert "<h2>Leaderboard</h2>" in page and page.count("<h3>leaderboard") == 1  # the JSON; its CSV twin skipped
    assert '<td class="num best"><b>0.81</b></td>' in page and '<td class="key">ig</td>' in page  # best marked
    assert "<h2>Maps during training</h2>" not in page and 'id="frames-data"' not in page
    assert "<h2>Leaderboard</h2>" not in build(folder, tmp_path / "r2.html").read_text()
    main(["report", str(folder), "--with", str(elsewhere), "--out", str(tmp_path / "r3.html")])
    assert "<h2>Leaderboard</h2>" in (tmp_path / "r3.html").read_text()


def test_pick_frames_keeps_every_epoch_and_thins_steps():
    entries = [{"step": s, "kind": "epoch" if s % 10 == 0 else "step"} for s in range(101)]
    picked = pick_frames(entries, 20)
    assert len(picked) == 20 and [e["step"] for e in picked] == sorted(e["step"] for e in picked)
    assert {e["step"] for e in picked} >= set(range(0, 101, 10))
    assert pick_frames(entries[:5], 20) == entries[:5]


def test_line_chart_breaks_lines_at_missing_values():
    svg = line_chart({"a": [(0, 1.0), (1, None), (2, 3.0), (3, 4.0)], "b": [(0, 2.0), (3, 2.0)]}, "t")
    assert svg.count("<polyline") == 3 and svg.count("<circle") == 5
    assert "nothing recorded" in line_chart({"a": [(0, None)]}, "t")


def test_cli_trains_with_tracking_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "cli"
    tiny = ["--model-opt", "widths=[4,8]", "--data-opt", "size=32", "--data-opt", "digit_size=[10,16]",
            "--n", "64", "--n-test", "8", "--batch-size", "32", "--epochs", "1", "--quiet"]
    main(["train", "--data", "clutter-decoy", "--out", str(out), "--track", "gradcam, saliency", "--probe", "4",
          "--track-every", "1", *tiny])
    store = TrackStore.open(out / "track")
    assert store.settings["methods"] == ["gradcam", "saliency"] and [e["step"] for e in store.snapshots] == [0, 1, 2]
    main(["train", "--data", "clutter-decoy", "--out", str(out), "--resume", *tiny[:-3], "--epochs", "2", "--quiet"])
    store = TrackStore.open(out / "track")  # --resume without --track continues the recorded tracker
    assert store.settings["methods"] == ["gradcam", "saliency"]
    assert [e["step"] for e in store.snapshots] == [0, 1, 2, 3, 4]
    main(["report", str(out), "--images", "3"])
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    assert len(_frames((out / "report.html").read_text())["frames"][0]["predictions"]) == 3
    for argv, message in (
        (["report", str(tmp_path / "empty")], "run folder not found"),
        (["train", "--out", str(tmp_path / "x"), "--tensorboard", *tiny], "--tensorboard and --track-every go with"),
        (["train", "--out", str(tmp_path / "x"), "--track", "gradcan", *tiny], "unknown method 'gradcan'"),
        (["train", "--out", str(tmp_path / "x"), "--guide", "rrrr", *tiny], "unknown guide 'rrrr'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_report_of_an_untracked_run_and_of_an_empty_folder(tmp_path, capsys):
    fit(tiny_config(tmp_path / "plain", epochs=1))
    page = build(tmp_path / "plain").read_text()
    assert "<h2>Training</h2>" in page and 'id="frame-slider"' not in page
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "empty")])
    assert "holds nothing to report" in capsys.readouterr().err
