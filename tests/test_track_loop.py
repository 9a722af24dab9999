"""`AttentionTracker` driven from a plain PyTorch loop: what it records is `explain` of the model at that step,
recording changes no loss, resuming continues the uninterrupted series, the loop's scalars are kept, and
every wrong call fails at once with a typed error."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnscope import data, models
from attnscope.errors import InputError, NotApplicableError, UnknownNameError
from attnscope.explain import explain
from attnscope.report import build
from attnscope.track import AttentionTracker, Probe, TrackStore, probe_from

SRC = Path(__file__).resolve().parents[1] / "src"
METHODS = ("gradcam", "saliency")
TRAIN = data.get("clutter-decoy", "train", 96, size=32, digit_size=[10, 16])
PROBE = probe_from(data.get("clutter-decoy", "test", 8, size=32, digit_size=[10, 16]), 8)
BATCHES = [torch.utils.data.default_collate([TRAIN[i] for i in range(j, j + 32)]) for j in (0, 32, 64)]


def _model():
    torch.manual_seed(0)
    return models.get("smallcnn", num_classes=10, widths=[4, 8])


def loop(tracker=None, epochs=3, start=None, stop_after=None, keep=None):
    """3 steps of 32 images per epoch; snapshot every 2 steps and at each epoch end; logs loss and accuracy.

    `start`: (model, optimizer, epoch) to continue from; `stop_after`: return after that many steps (a crash);
    `keep`: dict step → a copy of the model at every step. Returns (losses, model, optimizer).
    """
    model, optimizer, first = start or (_model(), None, 0)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, step = [], first * len(BATCHES)
    if tracker is not None and start is None:
        tracker.epoch_end(model, epoch=0, step=0)
    for epoch in range(first, epochs):
        for batch in BATCHES:
            model.train()
            logits = model(batch[0])
            loss = F.cross_entropy(logits, batch[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if keep is not None:
                keep[step] = copy.deepcopy(model).eval()
            if tracker is not None:
                tracker.log(step=step, loss=loss.item(), acc=(logits.argmax(1) == batch[1]).float().mean())
                tracker.step(model, step=step, epoch=step / len(BATCHES))
            if step == stop_after:
                return losses, model, optimizer
        if tracker is not None:
            tracker.epoch_end(model, epoch=epoch + 1, step=step)
    return losses, model, optimizer


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loop") / "mine"
    keep: dict[int, torch.nn.Module] = {0: _model().eval()}
    with AttentionTracker(folder, probe=PROBE, how=METHODS, every=2) as tracker:
        losses, model, _ = loop(tracker, keep=keep)
    return folder, losses, keep


def test_snapshots_are_explain_of_the_model_at_that_step(tracked):
    folder, _, keep = tracked
    store = TrackStore.open(folder / "track")
    assert [(e["step"], e["kind"], e["epoch"]) for e in store.snapshots] == [
        (0, "epoch", 0), (2, "step", 0.6667), (3, "epoch", 1), (4, "step", 1.3333), (6, "epoch", 2),
        (8, "step", 2.6667), (9, "epoch", 3)]
    for step in (0, 4, 9):
        expected = explain(keep[step], PROBE.images, METHODS, targets=PROBE.labels)
        for key, values in store.maps(step).items():
            peak = expected[key].values.abs().flatten(1).amax(1)[:, None, None]
            assert ((values - expected[key].values).abs() <= 2**-11 * peak + 1e-12).all(), (step, key)
        assert torch.equal(store.predictions(step), keep[step](PROBE.images).argmax(1))
    assert store.index["probe"]["source"] == "the first 8 images of ClutteredDigits (test split)"  # probe_from's


def test_recording_changes_no_loss(tracked):
    _, losses, _ = tracked
    plain, _, _ = loop(None)
    assert plain == losses  # bitwise: the same seed, with and without the tracker


def test_logged_scalars_are_kept_per_step(tracked):
    folder, losses, _ = tracked
    rows = TrackStore.open(folder / "track").scalars()
    assert [r["step"] for r in rows] == list(range(1, 10))
    assert [r["loss"] for r in rows] == losses
    assert [r["epoch"] for r in rows] == [round(s / 3, 4) for s in range(1, 10)]  # from step(..., epoch=)
    assert all(0 <= r["acc"] <= 1 for r in rows)


def test_the_report_of_a_loops_store_needs_no_train_config(tracked):
    folder, _, _ = tracked
    page = build(folder).read_text()
    assert not (folder / "config.json").exists()
    assert "Logged during training" in page and 'aria-label="loss"' in page and 'aria-label="acc"' in page
    assert "8 of 8 probe images (the first 8 images of ClutteredDigits (test split))" in page


def test_resume_after_a_crash_continues_the_uninterrupted_series(tracked, tmp_path):
    straight, _, _ = tracked
    folder = tmp_path / "crashed"
    # The loop dies after step 8 (its snapshot and scalars written); its own checkpoint is from epoch 2 (step 6).
    saved: dict[int, torch.nn.Module] = {}
    tracker = AttentionTracker(folder, probe=PROBE, how=METHODS, every=2)
    _, model, optimizer = loop(tracker, stop_after=6)
    checkpoint = (copy.deepcopy(model), copy.deepcopy(optimizer))
    tracker.epoch_end(model, epoch=2, step=6)
    loop(tracker, start=(model, optimizer, 2), stop_after=8, keep=saved)
    assert [e["step"] for e in TrackStore.open(folder / "track").snapshots][-1] == 8
    del tracker  # no close(): a crash

    with pytest.raises(InputError, match="already holds a tracker store; pass resume=True"):
        AttentionTracker(folder, probe=PROBE, how=METHODS, every=2).step(model, step=7)
    with pytest.raises(InputError, match=r"other settings \(every: 2 \(now 3\)"):
        AttentionTracker(folder, probe=PROBE, how=METHODS, every=3, resume=True).step(model, step=7)
    other = Probe(PROBE.images.flip(-1), PROBE.labels, PROBE.regions)
    with pytest.raises(InputError, match="another probe set"):
        AttentionTracker(folder, probe=other, how=METHODS, every=2, resume=True).step(model, step=7)

    model, state = checkpoint[0], checkpoint[1].state_dict()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    optimizer.load_state_dict(state)
    with AttentionTracker(folder, probe=PROBE, how=METHODS, every=2, resume=True) as tracker:
        loop(tracker, start=(model, optimizer, 2))
    final, plain = TrackStore.open(folder / "track"), TrackStore.open(straight / "track")
    drop = lambda e: {k: v for k, v in e.items() if k != "seconds"}
    assert [drop(e) for e in final.snapshots] == [drop(e) for e in plain.snapshots]
    for entry in final.snapshots:
        for key, values in final.maps(entry["step"]).items():
            assert torch.equal(values, plain.maps(entry["step"])[key]), (entry["step"], key)
    assert final.scalars() == plain.scalars()


def test_wrong_calls_fail_at_once_with_a_typed_error(tmp_path):
    cnn = _model()
    with pytest.raises(InputError, match="needs a probe"):
        AttentionTracker(tmp_path / "a", how=METHODS)
    images, labels = PROBE.images, PROBE.labels
    bad_probes = [(images[0], labels), (images, labels[:3]), (images, labels.float()),
                  (images, labels, torch.zeros(8, 3, dtype=torch.long)), images]
    for bad in bad_probes:
        with pytest.raises(InputError, match="probe"):
            AttentionTracker(tmp_path / "a", probe=bad, how=METHODS)
    with pytest.raises(UnknownNameError, match="gradcamm"):
        AttentionTracker(tmp_path / "a", probe=PROBE, how=("gradcamm",))
    # A model the tracker cannot explain fails at the first call, also when no snapshot is due.
    with pytest.raises(NotApplicableError, match="ltpa"):
        AttentionTracker(tmp_path / "b", probe=PROBE, how=("ltpa",), every=100).step(cnn, step=1)
    grey = (PROBE.images[:, :1], PROBE.labels)  # 1 channel for a 3-channel model
    with pytest.raises(InputError, match=r"cannot explain this model on its probe images \(8, 1, 32, 32\).*3 channels"):
        AttentionTracker(tmp_path / "c", probe=grey, how=METHODS, every=100).step(cnn, step=1)
    tracker = AttentionTracker(tmp_path / "d", probe=PROBE, how=METHODS)
    with pytest.raises(InputError, match="every=None: it records only at epoch_end"):
        tracker.step(cnn, step=1)
    with pytest.raises(InputError, match="log\\(\\) needs a step"):
        AttentionTracker(tmp_path / "e", probe=PROBE, how=METHODS).log(loss=1.0)
    with pytest.raises(InputError, match="must be a number"):
        tracker.log(step=1, loss="high")
    with pytest.raises(InputError, match="step must be an int"):
        tracker.epoch_end(cnn, epoch=0, step=-1)
    tracker.close()
    with pytest.raises(InputError, match="closed"):
        tracker.epoch_end(cnn, epoch=0, step=0)


DDP_CHILD = textwrap.dedent("""
    import os, sys
    import torch, torch.distributed as dist
    torch.set_num_threads(1)
    from attnscope import models
    from attnscope.track import AttentionTracker, Probe
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(models.get("smallcnn", num_classes=10, widths=[4, 8]))
    g = torch.Generator().manual_seed(1)
    probe = Probe(torch.rand(4, 3, 32, 32, generator=g), torch.arange(4))
    tracker = AttentionTracker(sys.argv[1], probe=probe, how=("gradcam",), every=1)
    for step in (1, 2):
        loss = model(torch.rand(2, 3, 32, 32, generator=g)).sum()
        loss.backward()
        recorded = tracker.step(model, step=step)
        assert (recorded is None) == (dist.get_rank() == 1), (dist.get_rank(), recorded)
    tracker.log(loss=float(loss))
    tracker.close()
    assert (tracker.store is None) == (dist.get_rank() == 1)
    dist.barrier()
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_under_ddp_only_rank_0_records(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(DDP_CHILD)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    store = TrackStore.open(tmp_path / "ddp" / "track")
    assert [e["step"] for e in store.snapshots] == [1, 2] and [r["step"] for r in store.scalars()] == [2]
