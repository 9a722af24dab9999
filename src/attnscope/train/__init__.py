"""Training: `fit(TrainConfig(...))`, deterministic, resumable, and DDP-aware under torchrun.

Names are imported on first use, so that `attnscope.train.config` (and the CLI's defaults taken from it)
loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {"TrainConfig": "config", "Callback": "loop", "Run": "loop", "fit": "loop", "fit_permuted": "permuted",
          "TASKS": "tasks"}

__all__ = ["TASKS", "Callback", "Run", "TrainConfig", "fit", "fit_permuted"]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'attnscope.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"attnscope.train.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
