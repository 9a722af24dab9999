"""Thin adapters that drive an `AttentionTracker` from other training frameworks (optional extras).

`attnscope.integrations.lightning.AttentionTrackerCallback` (extra `lightning`) and
`attnscope.integrations.huggingface.AttentionTrackerCallback` (extra `transformers`): the same store,
the same report, as a hand-written loop that calls the tracker itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries (numbers or one-element tensors) of `values`, as floats."""
    out = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def missing(package: str, extra: str) -> ImportError:
    """The error raised when an integration's framework is not installed."""
    return ImportError(f"this integration needs {package}: pip install 'attnscope[{extra}]'")
