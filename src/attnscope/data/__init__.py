"""Offline data with ground truth, generated from scikit-learn's bundled digits; users' own folders.

Built-in data sets are found by name: `get(name, split, n, seed, **cfg)`, `names()`. Every one
has `kind` ("classification" with `num_classes`, or "captioning" with `vocabulary()`).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from attnscope.data import geometry
from attnscope.data.cluttered import ClutteredDigits, ClutterSample
from attnscope.data.folder import FolderSample, ImageFolderData, load_images, read_image
from attnscope.data.karpathy import CaptionSample, KarpathyCaptions
from attnscope.data.mosaic import MosaicBatch, mosaics
from attnscope.data.photos import Photos, PhotoSample
from attnscope.data.scenes import DigitScenes, SceneObject, SceneSample, Token
from attnscope.data.vocab import CaptionBatch, Vocabulary, collate_captions, tokenize
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


# One builder signature for all: builder(split, n, seed, **cfg) -> Dataset.
@register("clutter")
def _clutter(split: str, n: int, seed: int, **cfg: Any) -> ClutteredDigits:
    return ClutteredDigits(split, n, seed=seed, **cfg)


@register("clutter-decoy")
def _clutter_decoy(split: str, n: int, seed: int, **cfg: Any) -> ClutteredDigits:
    return ClutteredDigits(split, n, seed=seed, decoy=True, **cfg)


@register("scenes")
def _scenes(split: str, n: int, seed: int, **cfg: Any) -> DigitScenes:
    return DigitScenes(split, n, seed=seed, **cfg)


from attnscope.data.permuted import PermutedLabels, permuted  # noqa: E402
from attnscope.data.scenes import shuffled  # noqa: E402

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


__all__ = [
    "CaptionBatch",
    "CaptionSample",
    "ClutterSample",
    "ClutteredDigits",
    "DigitScenes",
    "FolderSample",
    "ImageFolderData",
    "KarpathyCaptions",
    "MosaicBatch",
    "SceneObject",
    "SceneSample",
    "PermutedLabels",
    "PhotoSample",
    "Photos",
    "Token",
    "Vocabulary",
    "collate_captions",
    "geometry",
    "get",
    "load_images",
    "mosaics",
    "names",
    "read_image",
    "register",
    "tokenize",
]
