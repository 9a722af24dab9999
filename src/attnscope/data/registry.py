"""The built-in data sets by name: `get(name, split, n, seed, **cfg)`, `names()`, `register(name)`.

In their own module, apart from the package's `__init__`. One builder signature for all:
`builder(split, n, seed, **cfg) -> Dataset`.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from attnscope.data.cluttered import ClutteredDigits
from attnscope.data.karpathy import KarpathyCaptions
from attnscope.data.permuted import permuted
from attnscope.data.photos import Photos
from attnscope.data.scenes import DigitScenes, shuffled
from attnscope.errors import InputError
from attnscope.registry import DATASETS

register = DATASETS.register


def get(name: str, split: str = "train", n: int = 10_000, seed: int = 0, **cfg: Any) -> Dataset:
    """Build data set `name` (`n` samples of `split`, from `seed`); unknown names and options raise."""
    builder = DATASETS.get(name)
    try:
        return builder(split, n, seed, **cfg)
    except TypeError as e:  # an option the data set does not take
        raise InputError(f"data set {name!r}: {e}") from None


def names() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()


@register("clutter")
def _clutter(split: str, n: int, seed: int, **cfg: Any) -> ClutteredDigits:
    return ClutteredDigits(split, n, seed=seed, **cfg)


@register("clutter-decoy")
def _clutter_decoy(split: str, n: int, seed: int, **cfg: Any) -> ClutteredDigits:
    return ClutteredDigits(split, n, seed=seed, decoy=True, **cfg)


@register("scenes")
def _scenes(split: str, n: int, seed: int, **cfg: Any) -> DigitScenes:
    return DigitScenes(split, n, seed=seed, **cfg)


register("permuted", permuted)
register("scenes-shuffled", shuffled)


@register("karpathy")
def _karpathy(split: str, n: int, seed: int, **cfg: Any) -> KarpathyCaptions:
    """Options json=PATH (Karpathy-split JSON) and images=DIR are required; `n` caps the images, `seed` is unused."""
    if "json" not in cfg or "images" not in cfg:
        raise InputError("data set 'karpathy' needs json=PATH (a Karpathy-split JSON file) and images=DIR")
    return KarpathyCaptions(cfg.pop("json"), cfg.pop("images"), split, n, **cfg)


@register("photos")
def _photos(split: str, n: int, seed: int, **cfg: Any) -> Photos:
    """scikit-image's photos with hand-drawn boxes: one fixed set (any split, `seed` unused); `n` caps the objects."""
    return Photos(n=n, **cfg)
