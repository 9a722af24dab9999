"""`attnscope sanity` and `attnscope bench` on a tiny run trained in the test; permuted-label training."""

import json

import pytest
import torch
from click.testing import CliRunner

from attnscope import data
from attnscope.cli import cli, main
from attnscope.train import TrainConfig, fit, fit_permuted

TINY = dict(n=64, n_test=32, epochs=1, batch_size=32, quiet=True, model_cfg={"widths": [8, 16]})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sanity") / "run"
    fit(TrainConfig(out=str(out), **TINY))
    return out


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_sanity_cascade_writes_table_plot_and_grids(run_dir, tmp_path):
    out = tmp_path / "out"
    _invoke("sanity", "--checkpoint", run_dir, "--methods", "gradcam,saliency", "--out", out, "--images", 3,
            "--metrics", "spearman_abs,ssim", "--keep", 1, "--seed", 4, "--quiet")
    lines = (out / "cascading.csv").read_text().splitlines()
    assert lines[0] == "method,block,depth,metric,mean,ci_low,ci_high,n"
    assert len(lines) == 1 + 4 * 5 * 2  # (2 methods + 2 calibration maps) × 5 blocks × 2 metrics
    saved = json.loads((out / "cascading.json").read_text())
    assert saved["steps"] == ["fc", "features.1.1", "features.1.0", "features.0.1", "features.0.0"]
    assert saved["meta"]["seeds"]["fc"] == 4 + 4 and saved["meta"]["checkpoint"] == str(run_dir)
    sobel = [r for r in saved["rows"] if r["method"] == "sobel"]
    assert all(r["mean"] == pytest.approx(1.0) for r in sobel)
    assert (out / "cascading_similarity.png").stat().st_size > 1000
    assert (out / "cascading_maps_0.png").exists() and not (out / "cascading_maps_1.png").exists()


def test_sanity_data_test_trains_on_permuted_labels(run_dir, tmp_path):
    out = tmp_path / "out"
    _invoke("sanity", "--checkpoint", run_dir, "--methods", "saliency", "--out", out, "--images", 2, "--test", "data",
            "--metrics", "spearman_abs", "--permuted-n", 16, "--permuted-epochs", 1, "--quiet")
    meta = json.loads((out / "data.json").read_text())["meta"]
    assert meta["epochs"] == 1 and 0 <= meta["fit_acc"] <= 1 and meta["reached_target"] is False
    assert (out / "permuted-run" / "model.safetensors").exists()


@pytest.mark.parametrize("test, step, metric", [("smprt", "features.0.0", "spearman_abs"),
                                                ("emprt", "all blocks", "complexity_rise"),
                                                ("random-logit", "random class", "spearman_abs")])
def test_repaired_tests_write_the_same_tidy_table(run_dir, tmp_path, test, step, metric):
    out = tmp_path / "out"
    result = _invoke("sanity", "--checkpoint", run_dir, "--methods", "gradcam,saliency", "--out", out, "--images", 2,
                     "--test", test, "--metrics", "spearman_abs", "--samples", 2, "--keep", 1, "--quiet")
    saved = json.loads((out / f"{test}.json").read_text())
    assert saved["meta"]["test"] == test and saved["steps"][0] == step
    rows = [r for r in saved["rows"] if r["metric"] == metric]
    assert {r["method"] for r in rows} == {"gradcam", "saliency", "random", "sobel"}
    assert all(r["n"] == 2 or (r["n"] < 2 and r["mean"] != r["mean"]) for r in rows)
    assert (out / f"{test}_similarity.png").exists() and (out / f"{test}_maps_0.png").exists()
    assert metric in result.output


def test_bench_leaderboard(run_dir, tmp_path):
    out = tmp_path / "bench"
    printed = _invoke("bench", "--checkpoint", run_dir, "--out", out, "--images", 2, "--methods", "gradcam,saliency",
                      "--step", 256, "--quiet").output
    table = [line for line in printed.splitlines() if line.startswith(("┃", "│"))]
    assert table and max(len(line) for line in table) <= 80 and "…" not in printed  # nothing cut at 80 columns
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["gradcam", "saliency", "random", "sobel"]
    for r in rows:
        for key in ("pointing", "energy_box", "mass_mask", "rank_mask", "deletion_zero", "insertion_blur"):
            assert 0.0 <= r[key] <= 1.0
        assert 0.0 <= r["avg_drop_pct"] <= 100 and r["increase_pct"] in (0.0, 50.0, 100.0)
    assert (out / "leaderboard.csv").read_text().startswith("method,kind,pointing,")


def test_bench_metrics_filter_groups_and_estimate(run_dir, tmp_path):
    out = tmp_path / "bench"
    result = _invoke("bench", "--checkpoint", run_dir, "--out", out, "--images", 2, "--methods", "saliency",
                     "--metrics", "complexity,pointing,max_sensitivity", "--perturbations", 2, "--quiet")
    assert "estimated time:" in result.output
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["meta"]["columns"] == ["sparseness", "complexity", "effective_complexity", "entropy", "pointing",
                                        "max_sensitivity"]
    assert saved["meta"]["groups"]["max_sensitivity"] == "robustness"
    assert {"complexity", "effective_complexity", "max_sensitivity"} <= set(saved["meta"]["lower_is_better"])
    assert [r["method"] for r in saved["rows"]] == ["saliency", "random", "sobel"]
    assert all(r["max_sensitivity"] >= 0 for r in saved["rows"])
    only = _invoke("bench", "--checkpoint", run_dir, "--images", 2, "--methods", "saliency", "--estimate")
    assert "estimated time:" in only.output and "wrote" not in only.output


def test_bench_preset_fast_keeps_every_group_and_equals_the_same_leaderboard_asked_in_full(run_dir, tmp_path):
    """`--preset fast` is the leaderboard of its methods, columns, 8 curve steps and 3 copies — every group kept,
    explicit options win — the same numbers as asked for in full."""
    from attnscope.evaluate.presets import preset

    fast = preset("fast")
    _invoke("bench", "--checkpoint", run_dir, "--out", tmp_path / "a", "--images", 2, "--preset", "fast", "--quiet")
    a = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert [r["method"] for r in a["rows"]] == [*fast.methods, "random", "sobel"]
    assert set(a["meta"]["groups"].values()) == {"localisation", "faithfulness", "robustness", "complexity"}
    step = -(-64 * 64 // 8)  # the run's 64 px digits
    _invoke("bench", "--checkpoint", run_dir, "--out", tmp_path / "b", "--images", 2, "--methods",
            ",".join(fast.methods), "--metrics", fast.metrics, "--step", step, "--perturbations", 3, "--quiet")
    b = json.loads((tmp_path / "b" / "leaderboard.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "ms_per_image"} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"]) and a["meta"]["step"] == step
    _invoke("bench", "--checkpoint", run_dir, "--out", tmp_path / "c", "--images", 2, "--preset", "fast",
            "--methods", "gradcam", "--quiet")
    assert [r["method"] for r in json.loads((tmp_path / "c" / "leaderboard.json").read_text())["rows"]] == \
        ["gradcam", "random", "sobel"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gradcm"], "unknown method 'gradcm'"),
        (["--test", "bottom-up"], "unknown test"),
        (["--blocks", "features.7"], "unknown block"),
        (["--method-opt", "steps=3"], "METHOD.KEY=VALUE"),
    ],
)
def test_sanity_errors_are_one_line_exit_2(run_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["sanity", "--checkpoint", str(run_dir), "--out", str(tmp_path / "o"), "--images", "1",
              "--methods", "saliency", "--quiet", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bench_unknown_preset_is_one_line_exit_2(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--checkpoint", str(run_dir), "--out", str(tmp_path / "o"), "--preset", "quick"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "unknown leaderboard preset 'quick'" in err and len(err.splitlines()) == 1


def test_missing_checkpoint_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_permuted_labels_keep_class_counts_and_other_fields():
    base = data.get("clutter", "train", 40, 0)
    perm = data.get("permuted", "train", 40, 0, label_seed=1)
    assert sorted(perm.labels.tolist()) == sorted(base[i].label for i in range(40))
    assert perm.labels.tolist() != perm.true_labels.tolist()
    assert torch.equal(perm[5].mask, base[5].mask) and perm[5].label == int(perm.labels[5])
    assert type(data.get("permuted", "test", 4, 0)).__name__ == "ClutteredDigits"  # true test labels


def test_fit_permuted_stops_at_the_target(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "p"), **{**TINY, "n": 16, "epochs": 3})
    run, reached = fit_permuted(cfg, target_acc=0.0)
    assert reached and len(run.history) == 1 and "fit_acc" in run.history[0]
    run, reached = fit_permuted(TrainConfig(out=str(tmp_path / "q"), **{**TINY, "n": 16, "epochs": 2}), 1.01)
    assert not reached and [h["epoch"] for h in run.history] == [1, 2]


def test_table_csv_leaves_undefined_cells_empty():
    from attnscope.report.sanity import table_csv

    rows = [{"method": "gradcam", "block": "fc", "mean": float("nan"), "n": 0},
            {"method": "x", "block": "fc", "mean": 0.5, "n": 3}]
    assert table_csv(rows).splitlines() == ["method,block,mean,n", "gradcam,fc,,0", "x,fc,0.5,3"]


def test_interventions_command(run_dir, tmp_path, capsys):
    out = tmp_path / "int"
    result = _invoke("interventions", "--checkpoint", run_dir, "--out", out, "--images", 3,
                     "--methods", "gradcam,saliency")
    saved = json.loads((out / "interventions.json").read_text())
    assert [r["method"] for r in saved["summary"]] == ["gradcam", "saliency", "random", "sobel"]
    assert {r["part"] for r in saved["parts"]} >= {"fragments", "background"}
    assert all(0 <= r["background_mass"] <= 1 for r in saved["summary"])
    assert "single deletion" in result.output
    with pytest.raises(SystemExit) as e:
        main(["interventions", "--checkpoint", str(run_dir), "--out", str(tmp_path / "x"), "--data", "permuted"])
    assert e.value.code == 2 and "generated scenes" in capsys.readouterr().err


def test_probe_keeps_boxes_of_a_data_set_without_masks():
    """The photos have boxes and no masks: bench's box columns must still be scored (the mask ones left out)."""
    from attnscope.track import probe_from

    photos = probe_from(data.get("photos", "test", 3), 3)
    assert photos.masks is None
    assert torch.equal(photos.boxes, torch.stack([data.get("photos", "test", 3)[i].box for i in range(3)]))
    clutter = probe_from(data.get("clutter", "test", 2), 2)
    assert clutter.boxes.shape == (2, 4) and clutter.masks.shape == (2, 64, 64)
