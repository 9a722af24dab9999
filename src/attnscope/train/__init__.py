"""Training: `fit(TrainConfig(...))`, deterministic, resumable, and DDP-aware under torchrun."""

from __future__ import annotations

from attnscope.train import captioning  # noqa: F401  (registers the "captioning" task)
from attnscope.train.config import TrainConfig
from attnscope.train.loop import Callback, Run, fit
from attnscope.train.permuted import fit_permuted
from attnscope.train.tasks import TASKS

__all__ = ["TASKS", "Callback", "Run", "TrainConfig", "fit", "fit_permuted"]
