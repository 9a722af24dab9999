"""What recording maps during training costs: a plain PyTorch loop run without and with an `AttentionTracker`.

Default: SmallCNN on ClutteredDigits (64 px, 10,000 images, batch 64: 157 steps per epoch), AdamW +
one-cycle, 4 methods x 64 probe images recorded by `tracker.epoch_end` before training and at every
epoch end, on one CPU thread. The loop is the user's own (no `attnscope.train`): the tracker is driven
exactly as `examples/own_loop.py` drives it. Reports, per epoch, the tracker's seconds over the same
epoch's training seconds (measured in the same run, so both saw the same load), the end-to-end ratio
of the two runs, what one snapshot's time goes to, and whether every step's loss is bitwise equal
with and without tracking (same seed).

    PYTHONPATH=src python bench/track_overhead.py --methods cam,gradcam,saliency,inputxgrad
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnscope import data, models
from attnscope.explain import explain
from attnscope.track import AttentionTracker, TrackStore, measure, probe_from
from attnscope.track.measures import rank_maps
from attnscope.track.store import roundtrip


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="cam,gradcam,saliency,inputxgrad")
    p.add_argument("--probe", type=int, default=64)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--also", action="append", default=[], metavar="METHODS",
                   help="another method list to time one snapshot of (no training run), e.g. smoothgrad,ig")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    return p.parse_args()


def train(samples: list, epochs: int, tracker: AttentionTracker | None = None) -> dict:
    """The loop of `examples/own_loop.py` without guidance; returns losses, per-epoch seconds, the model."""
    torch.manual_seed(0)
    model = models.get("smallcnn", num_classes=10)
    loader = torch.utils.data.DataLoader(samples, batch_size=64, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * len(loader), pct_start=0.2)
    losses, train_s, track_s, step = [], [], [], 0
    started = time.perf_counter()
    if tracker is not None:
        tracker.epoch_end(model, epoch=0, step=0)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for x, y, *_ in loader:
            model.train()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
        t1 = time.perf_counter()
        if tracker is not None:
            tracker.log(step=step, loss=losses[-1])
            tracker.epoch_end(model, epoch=epoch + 1, step=step)
        train_s.append(t1 - t0)
        track_s.append(time.perf_counter() - t1)
    return {"losses": losses, "train_s": train_s, "track_s": track_s, "wall_s": time.perf_counter() - started,
            "model": model, "steps_per_epoch": len(loader)}


def snapshot_parts(model: torch.nn.Module, methods: list[str], probe_n: int, folder: Path,
                   repeats: int = 5) -> dict[str, float]:
    """Seconds of each part of one snapshot on `model` (median of `repeats` after one warm-up)."""
    probe = probe_from(data.get("clutter", "test", probe_n), probe_n)
    store = TrackStore.create(folder, {}, probe)
    parts: dict[str, list[float]] = {"explain": [], "measures": [], "write": []}
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        maps = explain(model, probe.images, methods, targets=probe.labels)
        predictions = maps.predicted.cpu()  # from the shared pass, as the tracker does
        t1 = time.perf_counter()
        values = {k: roundtrip(m.values) for k, m in maps.items()}
        ranked = rank_maps(values)  # as the tracker does: ranked once, this snapshot's ranks reused as "previous"
        measures = measure(values, probe, predictions, ranked=ranked, previous_ranked=ranked)
        t2 = time.perf_counter()
        store.add({"step": i, "epoch": i, "kind": "epoch", "measures": measures}, values, predictions)
        t3 = time.perf_counter()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            if i:
                parts[key].append(seconds)
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    dataset = data.get("clutter", "train", args.n)
    samples = [dataset[i] for i in range(len(dataset))]  # generated once, for both runs
    probe = probe_from(data.get("clutter", "test", args.probe), args.probe)
    tmp = Path(tempfile.mkdtemp(prefix="attnscope-track-bench-"))
    try:
        plain = train(samples, args.epochs)
        with AttentionTracker(tmp / "tracked", probe, methods) as tracker:
            tracked = train(samples, args.epochs, tracker)
        parts = snapshot_parts(tracked["model"], methods, args.probe, tmp / "parts")
        also = {other: snapshot_parts(tracked["model"], other.split(","), args.probe, tmp / f"also_{i}", repeats=1)
                for i, other in enumerate(args.also)}
        start_s = TrackStore.open(tmp / "tracked" / "track").snapshots[0]["seconds"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "methods": methods, "probe": args.probe, "steps_per_epoch": tracked["steps_per_epoch"],
        "threads": args.threads,
        "track_s_per_epoch": [round(s, 3) for s in tracked["track_s"]],
        "train_s_per_epoch_tracked": [round(s, 2) for s in tracked["train_s"]],
        "train_s_per_epoch_plain": [round(s, 2) for s in plain["train_s"]],
        "overhead_per_epoch": [round(a / b, 4) for a, b in zip(tracked["track_s"], tracked["train_s"], strict=True)],
        "overhead": round(sum(tracked["track_s"]) / sum(tracked["train_s"]), 4),
        "overhead_with_start_snapshot": round((sum(tracked["track_s"]) + start_s) / sum(tracked["train_s"]), 4),
        "wall_plain_s": round(plain["wall_s"], 1), "wall_tracked_s": round(tracked["wall_s"], 1),
        "wall_ratio": round(tracked["wall_s"] / plain["wall_s"], 4),
        "snapshot_parts_s": {k: round(v, 4) for k, v in parts.items()},
        "also": {k: {"snapshot_s": round(sum(v.values()), 4), "parts_s": {p: round(t, 4) for p, t in v.items()},
                     "per_epoch_of_plain_training": round(sum(v.values()) / statistics.mean(plain["train_s"]), 4)}
                 for k, v in also.items()},
        "same_losses": plain["losses"] == tracked["losses"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
