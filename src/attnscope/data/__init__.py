"""Offline data with ground truth, generated from scikit-learn's bundled digits; users' own folders.

Built-in data sets are found by name: `get(name, split, n, seed, **cfg)`, `names()` (`data.registry`). Every
one has `kind` ("classification" with `num_classes`, or "captioning" with `vocabulary()`).
"""

from __future__ import annotations

from attnscope.data import geometry
from attnscope.data.cluttered import ClutteredDigits, ClutterSample
from attnscope.data.folder import FolderSample, ImageFolderData, load_images, read_image
from attnscope.data.karpathy import CaptionSample, KarpathyCaptions
from attnscope.data.mosaic import MosaicBatch, mosaics
from attnscope.data.permuted import PermutedLabels
from attnscope.data.photos import Photos, PhotoSample
from attnscope.data.registry import get, names, register
from attnscope.data.scenes import DigitScenes, SceneObject, SceneSample, Token
from attnscope.data.vocab import CaptionBatch, Vocabulary, collate_captions, tokenize
from attnscope.registry import DATASETS

__all__ = [
    "DATASETS",
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
