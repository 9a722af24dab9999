"""Tiny tracked training runs shared by the tracker, guidance and report tests (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# 32 px decoy ClutteredDigits, a 2-block SmallCNN: 3 steps per epoch of 32 images.
TINY: dict[str, Any] = dict(
    model="smallcnn", data="clutter-decoy", n=96, n_test=16, epochs=3, batch_size=32, quiet=True,
    model_cfg={"widths": [4, 8]}, data_cfg={"size": 32, "digit_size": [10, 16]},
)
METHODS = ("cam", "gradcam", "saliency")


def tiny_config(out: Path, **changes: Any):
    from attnscope.train import TrainConfig

    return TrainConfig(**{**TINY, "out": str(out), **changes})


def tracked_run(out: Path, every: int | None = 2, probe: int = 8, methods=METHODS, until_epoch: int | None = None,
                **changes: Any):
    """Train the tiny run with a tracker; returns (run, tracker)."""
    from attnscope.track import FitTracker
    from attnscope.train import fit

    tracker = FitTracker(list(methods), probe=probe, every=every)
    return fit(tiny_config(out, **changes), callbacks=(tracker,), until_epoch=until_epoch), tracker
