"""`bench --stream` and `sanity --stream`: shards equal the in-memory run (per image, and the tables from the
shards' sums); the shard size and the number of processes change no number; a kill -9 resumed equals an
uninterrupted run; two torchrun processes (gloo, CPU) write what one writes; refusals are one line.

The maps of a method differ between batch sizes by the float rounding of batched kernels (~1e-7, as for
`explain --stream`), so method rows are compared to 1e-5; the calibration rows (no model in the map) and
everything computed from one shard's images alone are compared exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import attnscope as ats
from attnscope.cli import main
from attnscope.evaluate.leaderboard import Settings, image_scores, leaderboard
from attnscope.metrics.similarity import mean_ci, mean_ci_of_sums, sums
from attnscope.models import checkpoint
from attnscope.sanity import Comparison, Randomisation, model_randomization
from attnscope.stream import NamedData, Streaming
from attnscope.stream.bench import bench_dataset
from attnscope.stream.sanity import sanity_dataset
from killing import kill_after_first_shard

COLUMNS = "pointing,deletion_zero,faith_corr,sparseness,max_sensitivity"
SETTINGS = dict(step=64, batch_size=64, perturbations=2)
BENCH = ["--images", "clutter", "--n", "5", "--stream", "--methods", "gradcam,saliency", "--metrics",
         "pointing,faith_corr,sparseness", "--step", "64", "--shard-size", "2"]
SANITY = ["--images", "clutter", "--n", "5", "--stream", "--methods", "gradcam,saliency", "--test",
          "cascading,random-logit", "--blocks", "2", "--metrics", "spearman_abs,ssim", "--shard-size", "2",
          "--keep", "3"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[8, 16]).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> str:
    return str(checkpoint.save(model, tmp_path_factory.mktemp("run") / "model.safetensors"))


def _cli(argv: list[str]) -> None:
    try:
        main([*argv, "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)


def _shards(out: Path) -> list[dict[str, torch.Tensor]]:
    return [load_file(p) for p in sorted((out / "shards").iterdir())]


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "ms_per_image"} for r in rows]


def _close_rows(a: list[dict], b: list[dict], rel: float) -> None:
    assert [r["method"] for r in a] == [r["method"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            if key not in ("method", "kind", "ms_per_image"):
                tol = 1e-12 if ra["kind"] == "calibration" else rel
                assert ra[key] == pytest.approx(rb[key], rel=tol, abs=tol, nan_ok=True), (ra["method"], key)


def test_mean_and_ci_from_added_sums_equal_mean_ci_of_all_values() -> None:
    torch.manual_seed(3)
    values = torch.randn(23, dtype=torch.float64) * 3 + 1.5
    values[[2, 11, 17]] = float("nan")
    totals = sum(sums(part) for part in values.split(5))
    for a, b in zip(mean_ci_of_sums(totals), mean_ci(values), strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    one = mean_ci_of_sums(sums(torch.tensor([2.0])))
    assert one[0] == 2.0 and one[3] == 1 and one[1] != one[1]  # one value: no interval
    assert mean_ci_of_sums(sums(torch.tensor([float("nan")])))[3] == 0


def test_draws_depend_on_the_data_set_index_not_the_batch() -> None:
    from attnscope.evaluate.robustness import perturb
    from attnscope.sanity.calibration import random_map
    from attnscope.sanity.repaired import noise_draws

    x = torch.rand(5, 3, 8, 8)
    part = torch.tensor([2, 3])
    assert torch.equal(perturb(x, 3, seed=4)[2:4], perturb(x[2:4], 3, seed=4, index=part))
    assert torch.equal(random_map(x, 1, 4)[2:4], random_map(x[2:4], 1, 4, index=part))
    assert torch.equal(noise_draws(x, 3, 0.1, 4)[:, 2:4], noise_draws(x[2:4], 3, 0.1, 4, index=part))
    assert not torch.equal(random_map(x, 1, 4)[:2], random_map(x[2:4], 1, 4, index=part))  # not the position


@pytest.fixture(scope="module")
def streamed(model, tmp_path_factory) -> dict[int, tuple[dict, Path]]:
    data, root = NamedData("clutter", 5, 0), tmp_path_factory.mktemp("bench")
    return {size: (bench_dataset(model, data, root / str(size), ["gradcam", "saliency"], metrics=COLUMNS,
                                 settings=Settings(**SETTINGS), streaming=Streaming(size)), root / str(size))
            for size in (2, 3)}


def test_streamed_bench_equals_the_in_memory_leaderboard(model, streamed) -> None:
    data = NamedData("clutter", 5, 0)
    images, labels = torch.stack([data[i][0] for i in range(5)]), torch.tensor([data[i][1] for i in range(5)])
    boxes = torch.stack([data.data[i].box for i in range(5)])
    masks = torch.stack([data.data[i].mask for i in range(5)])
    args = (model, images, labels, boxes, masks, ["gradcam", "saliency"], COLUMNS)
    whole = image_scores(*args, settings=Settings(**SETTINGS))
    result, out = streamed[2]
    shards = _shards(out)
    with safe_open(str(sorted((out / "shards").iterdir())[0]), "pt") as f:
        keys = [tuple(k) for k in json.loads(f.metadata()["attnscope"])["keys"]]
    values = torch.cat([s["values"] for s in shards], dim=1)
    assert torch.equal(torch.cat([s["index"] for s in shards]), torch.arange(5))
    for (row, col), got in zip(keys, values, strict=True):
        want = whole.values[row][col]
        if row in ("random", "sobel") and col in ("faith_corr", "max_sensitivity", "sparseness", "pointing"):
            assert torch.equal(got, want), (row, col)  # drawn per image: the same draws in any batch
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        mean, low, high, n = mean_ci(got)  # the table: from the sums, equal to mean_ci of the shards' values
        assert result["rows"][[r["method"] for r in result["rows"]].index(row)][col] == pytest.approx(mean, 1e-12)
        assert result["ci"][row][col] == pytest.approx([low, high, n], rel=1e-12, nan_ok=True)
    memory = leaderboard(*args, settings=Settings(**SETTINGS)).rows
    _close_rows(result["rows"], memory, 1e-5)
    written = json.loads((out / "leaderboard.json").read_text())
    assert _without_time(written["rows"]) == _without_time(json.loads(json.dumps(result["rows"])))


def test_shard_sizes_two_and_three_give_the_same_table(streamed) -> None:
    _close_rows(streamed[2][0]["rows"], streamed[3][0]["rows"], 1e-5)
    assert streamed[2][0]["meta"]["skipped"] == {}


def test_folder_images_leave_the_localisation_columns_out_in_one_line(ckpt, tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    folder, rng = tmp_path / "photos", np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    _cli(["bench", "--checkpoint", ckpt, *BENCH[:1], str(folder), *BENCH[4:], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "localisation columns are not applicable" in err
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert "pointing" in board["meta"]["skipped"] and "pointing" not in board["meta"]["columns"]
    assert board["meta"]["targets"] == "predicted" and board["meta"]["images"] == 3


def _kill_after_first_shard(cmd: list[str], out: Path) -> None:
    kill_after_first_shard(cmd, out / "shards" / "shard-00000.safetensors")
    assert not (out / "manifest.json").exists()
    assert 1 <= len([p for p in (out / "shards").iterdir() if not p.name.startswith(".")]) < 3


@pytest.mark.parametrize("command, argv, table", [
    ("bench", [*BENCH, "--perturbations", "2", "--metrics", "pointing,faith_corr,max_sensitivity"],
     "leaderboard.csv"),
    ("sanity", SANITY, "cascading.csv"),
])
def test_kill_9_then_resume_equals_an_uninterrupted_run(ckpt, tmp_path, command, argv, table) -> None:
    _cli([command, "--checkpoint", ckpt, *argv, "--out", str(tmp_path / "whole")])
    out = tmp_path / "killed"
    _kill_after_first_shard([sys.executable, "-m", "attnscope", command, "--checkpoint", ckpt, *argv, "--out",
                             str(out), "--quiet"], out)
    with pytest.raises(SystemExit) as e:  # only the same command resumes
        main([command, "--checkpoint", ckpt, *argv, "--seed", "9", "--out", str(out), "--quiet", "--resume"])
    assert e.value.code == 2
    _cli([command, "--checkpoint", ckpt, *argv, "--out", str(out), "--resume"])
    for a, b in zip(_shards(out), _shards(tmp_path / "whole"), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [(p / table).read_text().splitlines() for p in (out, tmp_path / "whole")]
    cut = (lambda line: line.rsplit(",", 1)[0]) if command == "bench" else (lambda line: line)  # ms_per_image
    assert [cut(x) for x in lines[0]] == [cut(x) for x in lines[1]]
    assert json.loads((out / ".attnscope-output.json").read_text()).get("partial") is None


def _same_scores(merged, whole, tol: float) -> None:
    """Per-image similarities of a merged streamed result = the in-memory ones (calibration rows exactly), and
    every cell's mean and CI from the sums = `mean_ci` of the merged per-image values to 1e-12."""
    assert merged.steps == whole.steps
    for name in whole.scores:
        for step in whole.steps:
            for metric, want in whole.scores[name][step].items():
                got = merged.scores[name][step][metric]
                if name in ("random", "sobel"):
                    assert torch.equal(got, want), (name, step, metric)
                torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)
                mean, low, high, n = merged._stats(name, step, metric)
                want_mean, want_low, want_high, want_n = mean_ci(got)
                assert n == want_n and mean == pytest.approx(want_mean, rel=1e-12, nan_ok=True)
                # Σx² − (Σx)²/n cancels where the spread is tiny against the mean (eMPRT's entropies ≈ 2.3,
                # std 3e-4: 3e-12 off): the bounds to 1e-10
                assert (low, high) == pytest.approx((want_low, want_high), rel=1e-12, abs=1e-10, nan_ok=True)


def test_streamed_sanity_equals_the_in_memory_test(model, tmp_path) -> None:
    data = NamedData("clutter", 5, 0)
    images = torch.stack([data[i][0] for i in range(5)])
    how, blocks = ("gradcam", "saliency"), Randomisation(blocks=2)

    def cascading(x, labels, index, keep):
        return model_randomization(model, x, how, randomisation=blocks, index=index,
                                   comparison=Comparison(("spearman_abs", "ssim"), keep=keep))

    merged = sanity_dataset(data, tmp_path / "out", {"cascading": cascading}, keep=3,
                            streaming=Streaming(2))["cascading"]
    whole = cascading(images, None, None, 3)
    _same_scores(merged, whole, 1e-5)
    torch.testing.assert_close(merged.maps[whole.steps[0]]["gradcam"], whole.maps[whole.steps[0]]["gradcam"])
    assert merged.images.shape[0] == 3 and merged.meta["images"] == 5
    rows = [r for r in (tmp_path / "out" / "cascading.csv").read_text().splitlines()[1:]]
    assert len(rows) == len(whole.rows())


def test_reinitialisation_is_seeded_per_step_not_by_a_consumed_stream(model) -> None:
    import copy

    from attnscope.sanity.blocks import reinitialise, trace_blocks

    weights = []
    for draws_before in (0, 1000):
        work = copy.deepcopy(model)
        block = trace_blocks(work, torch.rand(1, 3, 32, 32), 2)[0]
        torch.rand(draws_before)  # images a shard read before this step consume the global stream
        reinitialise(block, "default", 7)
        weights.append({k: v.clone() for k, v in block.module.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
@pytest.mark.parametrize("command, argv, table", [("bench", BENCH, "leaderboard.json"),
                                                  ("sanity", SANITY, "cascading.json")])
def test_two_torchrun_processes_write_what_one_writes(ckpt, tmp_path, command, argv, table) -> None:
    _cli([command, "--checkpoint", ckpt, *argv, "--out", str(tmp_path / "one")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "attnscope",
           "--", command, "--checkpoint", ckpt, *argv, "--out", str(tmp_path / "two"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ats.__file__).parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for a, b in zip(_shards(tmp_path / "two"), _shards(tmp_path / "one"), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    one, two = (json.loads((tmp_path / p / table).read_text()) for p in ("one", "two"))
    assert _without_time(one["rows"]) == _without_time(two["rows"]) and one.get("ci") == two.get("ci")
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2


@pytest.mark.parametrize("command, argv, needle", [
    ("bench", ["--stream", "--out", "OUT"], "--stream needs --images"),
    ("sanity", ["--stream", "--out", "OUT"], "--stream needs --images"),
    ("sanity", [*SANITY[:-6], "--test", "data", "--out", "OUT"], "does not stream"),
    ("bench", [*BENCH, "--estimate", "--out", "OUT"], "--estimate"),
    ("bench", ["--images", "4", "--n", "4", "--data", "clutter", "--out", "OUT"], "both count images"),
])
def test_bad_stream_input_is_one_line_and_writes_nothing(ckpt, tmp_path, capsys, command, argv, needle) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([command, "--checkpoint", ckpt, *[str(out) if a == "OUT" else a for a in argv], "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and "\n" not in err, err
    assert not out.exists()


def test_resume_with_other_settings_is_refused_and_changes_nothing(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    _cli(["bench", "--checkpoint", ckpt, *BENCH, "--out", str(out)])
    marker = json.loads((out / ".attnscope-output.json").read_text())
    (out / ".attnscope-output.json").write_text(json.dumps({**marker, "partial": True}))  # as if interrupted
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    with pytest.raises(SystemExit) as e:
        main(["bench", "--checkpoint", ckpt, *BENCH, "--shard-size", "3", "--out", str(out), "--quiet", "--resume"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "shard_size" in err and "\n" not in err, err
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before


@pytest.mark.parametrize("test", ["independent", "smprt", "emprt", "random-logit"])
def test_every_streamed_test_equals_its_in_memory_run(model, tmp_path, test) -> None:
    from attnscope.sanity import emprt, random_logit, smprt

    two = Randomisation(blocks=2)
    same = lambda k: Comparison(("spearman_abs",), keep=k)  # noqa: E731
    runs = {"independent": lambda x, i, k: model_randomization(model, x, "saliency", mode="independent",
                                                               randomisation=two, comparison=same(k), index=i),
            "smprt": lambda x, i, k: smprt(model, x, "saliency", samples=3, randomisation=two, comparison=same(k),
                                           index=i),
            "emprt": lambda x, i, k: emprt(model, x, "saliency", bins=10, randomisation=two,
                                           comparison=Comparison(keep=k), index=i),
            "random-logit": lambda x, i, k: random_logit(model, x, "saliency", comparison=same(k), index=i)}
    data = NamedData("clutter", 5, 0)
    merged = sanity_dataset(data, tmp_path / "out", {test: lambda x, y, i, k: runs[test](x, i, k)},
                            streaming=Streaming(2), keep=1)[test]
    whole = runs[test](torch.stack([data[i][0] for i in range(5)]), None, 1)
    _same_scores(merged, whole, 1e-4)
    if test == "random-logit":
        assert merged.meta["other"] == whole.meta["other"]  # the random classes: drawn per image index


def test_a_checkpoints_own_data_set_is_streamed_with_its_configuration(model, tmp_path) -> None:
    # a run trained on 40 px clutter: `--images clutter` streams the 40 px images its in-memory probe reads
    ckpt = str(checkpoint.save(model, tmp_path / "model.safetensors", {"data": "clutter", "data_cfg": {"size": 40}}))
    argv = ["--methods", "gradcam", "--metrics", "pointing,sparseness", "--step", "64"]
    _cli(["bench", "--checkpoint", ckpt, *argv, "--images", "clutter", "--n", "3", "--stream", "--out",
          str(tmp_path / "streamed")])
    _cli(["bench", "--checkpoint", ckpt, *argv, "--images", "3", "--out", str(tmp_path / "memory")])
    streamed, memory = (json.loads((tmp_path / p / "leaderboard.json").read_text()) for p in ("streamed", "memory"))
    assert streamed["meta"]["data_cfg"] == {"size": 40}
    _close_rows(streamed["rows"], memory["rows"], 1e-5)
