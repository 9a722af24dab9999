"""Hardening round 3 (issue 27): silent results, hangs, tracebacks, stale temporary files, crafted headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnscope.cli import main
from tiny_runs import TINY_ARGS as TINY

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def _one_line(code: int, err: str) -> bool:
    return code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- item 10: train --resume cleans the temporary files a killed checkpoint write left ---------------------------


def test_train_resume_removes_the_temporary_files_a_killed_checkpoint_write_left(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    stale = [out / "checkpoints" / ".epoch_002.safetensors.k3x_9qab.tmp", out / ".model.safetensors.a1b2c3d4.tmp",
             out / ".metrics.jsonl.zz99yy88.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = out / "checkpoints" / ".epoch_002.safetensors.mine.tmp"  # not a name atomic_path gives: left alone
    mine.write_text("keep")
    main(["train", "--out", str(out), "--epochs", "2", "--resume", *TINY])
    assert not any(p.exists() for p in stale) and mine.read_text() == "keep"
    assert (out / "checkpoints" / "epoch_002.safetensors").is_file()
    assert capsys.readouterr().err.count("left by an interrupted run") == 3


# -- item 11: a crafted checkpoint header is refused from its size, before anything is allocated ------------------

CRAFTED = textwrap.dedent("""
    import json, resource, sys
    from safetensors.torch import save_file
    from attnscope import models
    from attnscope.errors import CheckpointError
    from attnscope.models import checkpoint
    weights = models.get("smallcnn", widths=[4, 8]).state_dict()
    header = {"format": checkpoint.FORMAT, "model": {"name": "smallcnn", "config": {"widths": [4, 10**9]}}}
    save_file(dict(weights), sys.argv[1], metadata={"attnscope": json.dumps(header)})
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))  # 1 GB more than now, at most
    try:
        checkpoint.load(sys.argv[1])
    except CheckpointError as e:
        print(e)
""")


def test_a_crafted_header_asking_for_billions_of_weights_is_refused_before_allocating(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CRAFTED, str(tmp_path / "c.safetensors")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "do not fit model 'smallcnn'" in done.stdout and "50,000,000,136 values" in done.stdout
    assert "allocate" not in done.stdout  # refused from the header, not after an allocation failed


def test_a_checkpoint_whose_header_matches_its_weights_still_loads(tmp_path):
    from attnscope import models
    from attnscope.models import checkpoint

    model = models.get("smallcnn", widths=[4, 8])
    checkpoint.save(model, tmp_path / "m.safetensors")
    loaded, _ = checkpoint.load(tmp_path / "m.safetensors")
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_json_helpers_survive_a_fifo_in_place_of_a_file(tmp_path):
    from attnscope import fileio, outdir
    from attnscope.errors import DataError

    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(DataError, match="not a regular file"):
        fileio.read_jsonl(tmp_path / "metrics.jsonl")
    os.mkfifo(tmp_path / outdir.MARKER)
    assert outdir.read_marker(tmp_path) is None
    assert json.loads("{}") == {}


# -- item 4: explain inside torch.inference_mode() -------------------------------------------------------------


def test_explain_leaves_inference_mode_for_its_pass_and_gives_the_maps_of_a_call_outside_it():
    import torch

    import attnscope as ats
    from attnscope import models

    model, x = models.get("smallcnn", widths=[4, 8]).eval(), torch.rand(2, 3, 32, 32)
    methods = ("gradcam", "saliency", "ig")
    want = ats.explain(model, x, methods)
    assert all(want[m].values.abs().sum() > 0 for m in methods)
    with torch.inference_mode():
        inside = ats.explain(model, x, methods)  # all zeros before (no graph is recorded in inference mode)
        made_inside = x.clone()  # an inference tensor
        assert torch.is_inference_mode_enabled()  # the caller's mode is back
    from_inference_tensor = ats.explain(model, made_inside, methods, targets=torch.tensor([1, 2]))
    for m in methods:
        torch.testing.assert_close(inside[m].values, want[m].values)
    want12 = ats.explain(model, x, methods, targets=torch.tensor([1, 2]))
    for m in methods:
        torch.testing.assert_close(from_inference_tensor[m].values, want12[m].values)
    assert made_inside.is_inference()  # the caller's tensor is untouched


def test_a_model_made_under_inference_mode_and_meta_or_sparse_images_are_typed_errors():
    import torch

    import attnscope as ats
    from attnscope import models
    from attnscope.errors import InputError

    with torch.inference_mode():
        frozen = models.get("smallcnn", widths=[4, 8]).eval()
    model, x = models.get("smallcnn", widths=[4, 8]).eval(), torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match=r"features\.0\.0\.weight is an inference tensor"):
        ats.explain(frozen, x, "saliency")
    with pytest.raises(InputError, match="meta device"):
        ats.explain(model, x.to("meta"), "gradcam")
    with pytest.raises(InputError, match="to_dense"):
        ats.explain(model, x.to_sparse(), "gradcam")


# -- item 7: silent results ---------------------------------------------------------------------------------------


def test_an_int32_tiff_above_65535_is_refused_not_read_as_white(tmp_path):
    import numpy as np
    from PIL import Image

    from attnscope.data import read_image
    from attnscope.errors import DataError

    Image.fromarray(np.array([[0, 70000], [35000, 1000]], dtype=np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"32-bit integer image with values 0\.\.70000"):
        read_image(tmp_path / "wide.tif")
    Image.fromarray(np.array([[0, 65535], [257, 0]], dtype=np.int32), mode="I").save(tmp_path / "sixteen.tif")
    grey = read_image(tmp_path / "sixteen.tif")[0]  # still read as 16-bit: 65535 → 1, 257 → 1/255
    assert grey[0, 1] == 1.0 and grey[1, 0] == pytest.approx(1 / 255) and grey[0, 0] == 0


@pytest.mark.parametrize("kind", ["dangling", "fifo", "dev-zero"])
def test_a_png_that_is_not_a_regular_file_inside_a_folder_is_refused_in_one_line(tmp_path, capsys, kind):
    from PIL import Image

    from attnscope.data import load_images
    from attnscope.data.folder import ImageFolderData
    from attnscope.errors import DataError

    folder = tmp_path / "imgs"
    (folder / "cls").mkdir(parents=True)
    for where in (folder, folder / "cls"):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(where / "a.png")
        bad = where / "b.png"
        if kind == "fifo":
            os.mkfifo(bad)
        else:
            bad.symlink_to("/dev/zero" if kind == "dev-zero" else tmp_path / "gone.png")
    with pytest.raises(DataError, match="b.png is a"):
        load_images(folder)
    with pytest.raises(DataError, match="b.png (is|cannot be read)"):
        ImageFolderData(folder)
    with pytest.warns(UserWarning, match="b.png"):
        assert len(ImageFolderData(folder, skip_bad=True)) == 1  # left out with a word, never silently


def test_method_options_for_a_method_not_run_are_refused_by_bench_and_interventions(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--out", str(run), "--epochs", "1", *TINY])
    capsys.readouterr()
    for argv in (["bench", "--checkpoint", str(run), "--out", str(tmp_path / "b"), "--images", "2", "--methods",
                  "saliency", "--quiet"],
                 ["interventions", "--checkpoint", str(run), "--out", str(tmp_path / "i"), "--n", "2",
                  "--methods", "saliency", "--quiet"]):
        code, err = _run([*argv, "--method-opt", "ig.steps=-1"], capsys)
        assert _one_line(code, err) and "'ig'" in err and "not among --methods" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("how", ["nan", "detached", "constant"])
def test_a_target_callable_giving_nan_or_scores_detached_from_the_logits_is_a_typed_error(how):
    import torch

    import attnscope as ats
    from attnscope import models
    from attnscope.errors import InputError

    model, x = models.get("smallcnn", widths=[4, 8]).eval(), torch.rand(2, 3, 32, 32)
    fn = {"nan": lambda out: out[:, 0] * torch.tensor([1.0, float("nan")]),
          "detached": lambda out: out[:, 0].detach(), "constant": lambda out: torch.ones(out.shape[0])}[how]
    message = "NaN or infinite scores \\(rows \\[1\\]\\)" if how == "nan" else "do not depend"
    with pytest.raises(InputError, match=message):
        ats.explain(model, x, ("gradcam", "saliency"), targets=fn)
    if how != "nan":  # a method that only reads scores (occlusion) is given what it asked for
        assert ats.explain(model, x, "occlusion", targets=fn, options={"occlusion": {"window": 8, "stride": 8}})
    ok = ats.explain(model, x, "saliency", targets=lambda out: out[:, 3] - out[:, 5])
    assert ok["saliency"].values.abs().sum() > 0


def test_box_score_refuses_boxes_without_area():
    import torch

    from attnscope.errors import InputError
    from attnscope.explain.tasks import BoxScore

    for box in ([4.0, 4.0, 4.0, 9.0], [0.0, 6.0, 5.0, 6.0], [5.0, 0.0, 1.0, 9.0], [0.0, 0.0, float("nan"), 3.0]):
        with pytest.raises(InputError, match="x2 > x1 and y2 > y1"):
            BoxScore(torch.tensor([[0.0, 0.0, 5.0, 5.0], box]), torch.tensor([1, 1]))
    assert BoxScore(torch.tensor([0.0, 0.0, 5.0, 5.0]), 1).boxes.shape == (4,)


def test_normalized_gives_zeros_for_a_map_constant_up_to_float_rounding_and_keeps_real_structure():
    import torch
    import torchvision

    import attnscope as ats
    from attnscope.maps import NEAR_CONSTANT, normalize

    torch.manual_seed(0)
    vgg = torchvision.models.vgg11(num_classes=10).eval()
    maps = ats.explain(vgg, torch.rand(2, 3, 32, 32), ("gradcam", "layercam"), layer="features")  # a 1×1 layer
    for _, m in maps.items():
        assert m.lowres.shape[-2:] == (1, 1)
        flat = m.values.flatten(-2)
        assert (flat.max(-1).values > flat.min(-1).values).any()  # the upsampled constant varies by float noise
        assert torch.equal(m.normalized(), torch.zeros_like(m.values))  # ... and normalises to zeros, as documented
    eps = torch.finfo(torch.float32).eps
    near = torch.full((1, 4, 4), 3.0)
    near[0, 0, 0] += 3.0 * eps * (NEAR_CONSTANT - 1)
    assert torch.equal(normalize(near), torch.zeros_like(near))
    real = torch.full((1, 4, 4), 3.0)
    real[0, 0, 0] += 3.0 * eps * 4 * NEAR_CONSTANT  # above the noise: structure, stretched to [0, 1]
    assert normalize(real)[0, 0, 0] == 1.0 and normalize(real)[0, 1, 1] == 0.0
    assert torch.equal(normalize(torch.zeros(1, 3, 3)), torch.zeros(1, 3, 3))
    assert torch.equal(normalize(torch.tensor([[[0.0, 1e-30], [0.0, 0.0]]]))[0, 0], torch.tensor([0.0, 1.0]))


# -- item 8: nothing waits on a FIFO ------------------------------------------------------------------------------

HANG = textwrap.dedent("""
    import os, sys, numpy as np
    from pathlib import Path
    from attnscope.errors import DataError
    root = Path(sys.argv[1])
    os.mkfifo(root / "pipe.png")
    from attnscope.data import read_image
    try:
        read_image(root / "pipe.png")
    except DataError as e:
        print("image:", e)
    from attnscope.track.store import INDEX, FORMAT, TrackStore
    (root / "track").mkdir()
    (root / "track" / INDEX).write_text('{"format": "%s", "settings": {}, "probe": {"file": "probe.npz"}, '
                                        '"snapshots": []}' % FORMAT)
    os.mkfifo(root / "track" / "probe.npz")
    try:
        TrackStore.open(root / "track").probe()
    except DataError as e:
        print("store:", e)
""")


def test_read_image_and_a_tracker_store_never_block_on_a_fifo(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", HANG, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)  # before: blocked until killed
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("image: ") and "not a regular file" in lines[0]
    assert lines[1].startswith("store: ") and "not a regular file" in lines[1]


# -- item 9: every remaining traceback is one line (the CLI cases are in bench/faults_census.py) -------------------


def test_option_types_refuse_out_of_range_numbers_and_unusable_devices_in_one_line(capsys):
    for argv, needle in [
        (["explain", "--checkpoint", "x", "--images", "clutter", "--n", "9" * 23, "--out", "o"], "at most 2147483647"),
        (["explain", "--checkpoint", "x", "--images", "clutter", "--data-seed", "-1", "--out", "o"], "a seed is 0"),
        (["train", "--seed", str(2**70)], "a seed is 0 .. 9223372036854775807"),
        (["bench", "--checkpoint", "x", "--seed", str(2**70)], "a seed is"),
        (["sanity", "--checkpoint", "x", "--out", "o", "--seed", str(2**70)], "a seed is"),
        (["train", "--batch-size", "1e20"], "'1e20' is not an integer"),
        (["train", "--batch-size", str(10**20)], "at most 2147483647"),
        (["train", "--device", "abc"], "'abc' is not a device"),
        (["train", "--device", "cuda:3"], "cuda:3: "),
        (["explain", "--checkpoint", "x", "--images", "clutter", "--device", "meta", "--out", "o"], "meta holds"),
        (["train", "--workers", "100000"], "at most 256"),
    ]:
        code, err = _run(argv, capsys)
        assert _one_line(code, err) and needle in err, (argv, err)


def test_library_seeds_devices_and_a_full_disk_are_typed_errors(tmp_path, monkeypatch):
    import errno

    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from attnscope import fileio
    from attnscope.errors import InputError
    from attnscope.train import TrainConfig
    from attnscope.train.distributed import pick_device

    with pytest.raises(InputError, match="2\\*\\*63 - 1"):
        TrainConfig(seed=2**70)
    for spec in ("abc", "meta", "cuda:3" if not torch.cuda.is_available() else "cuda:99"):
        with pytest.raises(InputError):
            pick_device(spec)
    assert pick_device("cpu") == torch.device("cpu")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as e:  # the CLI's handler of a full disk catches it: one line, exit 2
        fileio.save_tensors(tmp_path / "m.safetensors", {"x": torch.zeros(2)})
    assert e.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_an_image_too_small_for_the_model_is_one_line_in_sanity_and_bench(tmp_path, capsys):
    from PIL import Image

    run, image = tmp_path / "run", tmp_path / "one.png"
    main(["train", "--out", str(run), "--epochs", "1", *TINY])
    Image.new("RGB", (1, 1)).save(image)  # the SmallCNN pools it to nothing (found by bench/fuzz_cli.py, seed 1)
    capsys.readouterr()
    for command in ("sanity", "bench"):
        code, err = _run([command, "--checkpoint", str(run), "--images", str(image), "--methods", "saliency",
                          "--out", str(tmp_path / command), "--quiet"], capsys)
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 2 and errors == [errors[-1]] and "the model raised on inputs of shape (1, 3, 1, 1)" in err, err
        assert "Traceback" not in err and "fake_tensor" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "run"]
