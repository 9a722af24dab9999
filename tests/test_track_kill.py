"""A tracked run killed with SIGKILL mid-epoch and resumed loses nothing and ends with the uninterrupted series."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from attnscope.track import TrackStore
from tiny_runs import TINY, tracked_run

SRC = Path(__file__).resolve().parents[1] / "src"

# Runs the tiny tracked training (3 steps per epoch, a snapshot every 2 steps). With a kill step,
# the process SIGKILLs itself right after the snapshot file of that step is written and before
# the index names it: the narrowest window a crash can hit.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from attnscope.track import FitTracker, store
    from attnscope.train import TrainConfig, fit

    out, kill_at, resume, tiny = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", eval(sys.argv[4])
    if kill_at >= 0:
        write = store._write_npz
        def write_then_die(path, arrays):
            write(path, arrays)
            if path.name == f"step_{kill_at:07d}.npz":
                os.kill(os.getpid(), signal.SIGKILL)
        store._write_npz = write_then_die
    tracker = FitTracker(["cam", "gradcam", "saliency"], probe=8, every=2)
    fit(TrainConfig(**tiny, out=out, resume=resume), callbacks=(tracker,))
""")


def _child(tmp_path: Path, out: Path, kill_at: int, resume: bool) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at), "1" if resume else "0", repr(TINY)],
                          env=env, capture_output=True, text=True, timeout=240)


def _snapshot(store: TrackStore, entry: dict) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(store.folder / entry["file"]) as f:
        arrays = {k: f[k] for k in f.files}
    return {k: v for k, v in entry.items() if k != "seconds"}, arrays


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_series(tmp_path):
    out = tmp_path / "killed"
    killed = _child(tmp_path, out, kill_at=8, resume=False)  # step 8 lies inside epoch 3 (steps 7-9)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # What the kill left: a valid index whose every entry is complete, one orphan file, epochs 1-2 trained.
    at_kill = TrackStore.open(out / "track")
    assert [e["step"] for e in at_kill.snapshots] == [0, 2, 3, 4, 6]
    assert [e["kind"] for e in at_kill.snapshots] == ["epoch", "step", "epoch", "step", "epoch"]
    recorded = {e["step"]: _snapshot(at_kill, e) for e in at_kill.snapshots}
    for step in recorded:
        assert set(at_kill.maps(step)) == {"cam", "gradcam", "saliency"}
    assert (out / "track" / "step_0000008.npz").exists()  # written, never indexed
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    resumed = _child(tmp_path, out, kill_at=-1, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children ran
    try:
        tracked_run(tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)

    final, straight = TrackStore.open(out / "track"), TrackStore.open(tmp_path / "straight" / "track")
    steps = [e["step"] for e in final.snapshots]
    assert steps == [e["step"] for e in straight.snapshots] == [0, 2, 3, 4, 6, 8, 9]
    assert sorted(p.name for p in (out / "track").glob("step_*.npz")) == [f"step_{s:07d}.npz" for s in steps]
    for a, b in zip(final.snapshots, straight.snapshots, strict=True):
        (meta_a, arrays_a), (meta_b, arrays_b) = _snapshot(final, a), _snapshot(straight, b)
        assert meta_a == meta_b  # step, epoch, kind, every measure
        assert arrays_a.keys() == arrays_b.keys()
        for key in arrays_a:
            np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=f"step {a['step']} {key}")
    for step, (meta, arrays) in recorded.items():  # nothing recorded before the kill is lost or changed
        now_meta, now_arrays = _snapshot(final, final.entry(step))
        assert now_meta == meta
        for key in arrays:
            np.testing.assert_array_equal(now_arrays[key], arrays[key])
