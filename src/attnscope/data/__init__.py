"""Offline data with ground truth, generated from scikit-learn's bundled digits; users' own folders."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from attnscope.data.cluttered import ClutteredDigits, ClutterSample
from attnscope.registry import DATASETS

DATASETS.register("clutter", lambda split, n, seed, **cfg: ClutteredDigits(split, n, seed=seed, **cfg))
DATASETS.register("clutter-decoy", lambda split, n, seed, **cfg: ClutteredDigits(split, n, seed=seed, decoy=True, **cfg))


def get(name: str, split: str, n: int, seed: int = 0, **cfg: Any) -> Dataset:
    """Data set `name` (see `names()`), split "train" or "test", `n` samples, generated from `seed`."""
    return DATASETS.get(name)(split, n, seed, **cfg)


def names() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()


__all__ = ["ClutterSample", "ClutteredDigits", "get", "names"]
