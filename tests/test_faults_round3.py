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
