"""`attnscope train` under torchrun with 2 processes (gloo on CPU) matches one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from attnscope.models import checkpoint
from attnscope.train import TrainConfig, fit

ARGS = dict(n=128, n_test=64, batch_size=32, epochs=2, quiet=True, data_cfg={"size": 32, "digit_size": [12, 16]})


def _torchrun(out, model_opts):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "attnscope", "train", "--out", str(out), "--n-train", "128", "--n-test", "64", "--batch-size", "32",
           "--epochs", "2", "--quiet", "--data-opt", "size=32", "--data-opt", "digit_size=[12,16]"]
    for o in model_opts:
        cmd += ["--model-opt", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_equal_one_without_batch_norm(tmp_path):
    opts = {"widths": [8, 16], "batch_norm": False}
    ddp = _torchrun(tmp_path / "ddp", ["widths=[8,16]", "batch_norm=false"])
    single = fit(TrainConfig(out=str(tmp_path / "one"), model_cfg=opts, **ARGS))
    for a, b in zip(ddp, single.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
    model, _ = checkpoint.load(tmp_path / "ddp")
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    # Only rank 0 wrote: one metrics line per epoch, one checkpoint per epoch.
    assert len(ddp) == 2 and len(list((tmp_path / "ddp" / "checkpoints").iterdir())) == 2


@pytest.mark.slow
def test_two_processes_close_to_one_with_batch_norm(tmp_path):
    """BatchNorm statistics are per process on CPU (SyncBatchNorm needs GPUs): close, not equal."""
    ddp = _torchrun(tmp_path / "ddp", ["widths=[8,16]"])
    single = fit(TrainConfig(out=str(tmp_path / "one"), model_cfg={"widths": [8, 16]}, **ARGS))
    for a, b in zip(ddp, single.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=0.1)
