"""What recording maps during training costs: the same training run with and without an AttentionTracker.

Default: `attnscope train`'s defaults (SmallCNN, ClutteredDigits 64 px, 10,000 images, batch 64:
157 steps per epoch), 4 methods x 64 probe images recorded at every epoch end, on one CPU thread.
Reports, per epoch after the first (which also generates the data), the tracker's time over the
epoch's training time, the end-to-end wall-time ratio of the two runs, and what one snapshot's
time goes to (the shared explain call, the probe's forward, the measures, the compressed write).

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

from attnscope import data
from attnscope.explain import explain
from attnscope.track import AttentionTracker, TrackStore, measure, probe_from
from attnscope.track.measures import rank_maps
from attnscope.track.store import roundtrip
from attnscope.train import TrainConfig, fit


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


def timed_fit(config: TrainConfig, callbacks: tuple = ()) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    run = fit(config, callbacks=callbacks)
    return time.perf_counter() - started, run.history


def snapshot_parts(methods: list[str], probe_n: int, run_dir: Path, name: str = "bench_store",
                   repeats: int = 5) -> dict[str, float]:
    """Seconds of each part of one snapshot, on the trained model of `run_dir` (median of `repeats` after one
    warm-up)."""
    from attnscope.models import checkpoint

    model, _ = checkpoint.load(run_dir)
    probe = probe_from(data.get("clutter", "test", probe_n), probe_n)
    store = TrackStore.create(run_dir / name, {}, probe)
    parts: dict[str, list[float]] = {"explain": [], "predict": [], "measures": [], "write": []}
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        maps = explain(model, probe.images, methods, targets=probe.labels)
        t1 = time.perf_counter()
        predictions = maps.predicted.cpu()  # from the shared pass, as the tracker does
        t2 = time.perf_counter()
        values = {k: roundtrip(m.values) for k, m in maps.items()}
        ranked = rank_maps(values)  # as the tracker does: ranked once, this snapshot's ranks reused as "previous"
        measures = measure(values, probe, predictions, ranked=ranked, previous_ranked=ranked)
        t3 = time.perf_counter()
        store.add({"step": i, "epoch": i, "kind": "epoch", "measures": measures}, values, predictions)
        t4 = time.perf_counter()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            if i:
                parts[key].append(seconds)
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="attnscope-track-bench-"))
    try:
        base = dict(n=args.n, n_test=2000, epochs=args.epochs, quiet=True)
        wall_plain, plain = timed_fit(TrainConfig(**base, out=str(tmp / "plain")))
        tracker = AttentionTracker(methods, probe=args.probe)
        wall_tracked, tracked = timed_fit(TrainConfig(**base, out=str(tmp / "tracked")), (tracker,))
        parts = snapshot_parts(methods, args.probe, tmp / "tracked")
        also = {other: snapshot_parts(other.split(","), args.probe, tmp / "tracked", f"store_{i}", repeats=1)
                for i, other in enumerate(args.also)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    later = tracked[1:] or tracked
    plain_later = plain[1:] or plain
    plain_epoch_s = sum(r["train_time_s"] for r in plain_later) / len(plain_later)
    result = {
        "methods": methods, "probe": args.probe, "steps_per_epoch": tracked[0]["step"], "threads": args.threads,
        "track_s_per_epoch": [r["track_s"] for r in tracked],
        "train_s_per_epoch_tracked": [round(r["train_time_s"], 2) for r in tracked],
        "train_s_per_epoch_plain": [round(r["train_time_s"], 2) for r in plain],
        "overhead_per_epoch": round(sum(r["track_s"] for r in later) / sum(r["train_time_s"] for r in later), 4),
        "wall_plain_s": round(wall_plain, 1), "wall_tracked_s": round(wall_tracked, 1),
        "wall_ratio": round(wall_tracked / wall_plain, 4),
        "snapshot_parts_s": {k: round(v, 4) for k, v in parts.items()},
        "also": {k: {"snapshot_s": round(sum(v.values()), 4), "parts_s": {p: round(t, 4) for p, t in v.items()},
                     "per_epoch_of_plain_training": round(sum(v.values()) / plain_epoch_s, 4)}
                 for k, v in also.items()},
        "same_training": [r["test_loss"] for r in plain] == [r["test_loss"] for r in tracked],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
