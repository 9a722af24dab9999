"""The source of all built-in data: scikit-learn's bundled handwritten digits (1,797 images, 8×8).

The split into train and test *source* digits is fixed (it does not depend on any data set seed),
stratified by class, and keeps exact duplicate images on the same side, so no digit drawing is
ever seen in both splits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from attnscope.errors import InputError

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
INK_THRESHOLD = 0.25  # a rendered pixel counts as ink above this share of full intensity

# Named colours that digits, fragments and captions use (RGB in [0, 1]).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.2, 0.15),
    "green": (0.2, 0.85, 0.25),
    "blue": (0.25, 0.4, 1.0),
    "yellow": (0.95, 0.9, 0.2),
    "purple": (0.7, 0.3, 0.95),
    "white": (0.95, 0.95, 0.95),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
    return images, bunch.target.astype(np.int64)


@lru_cache(maxsize=1)
def split_indices() -> dict[str, np.ndarray]:
    """Indices into `load_digits()` for each split: stratified 80/20, duplicates kept together."""
    images, labels = _load()
    rng = np.random.default_rng(20180101)
    # Group identical drawings so that a duplicate can never straddle the split.
    groups: dict[bytes, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.tobytes(), []).append(i)
    test: list[int] = []
    for digit in range(10):
        members = [g for g in groups.values() if labels[g[0]] == digit]
        order = rng.permutation(len(members))
        n_test = round(TEST_FRACTION * len(members))
        for j in order[:n_test]:
            test.extend(members[j])
    test_set = set(test)
    train = [i for i in range(len(images)) if i not in test_set]
    return {"train": np.array(train), "test": np.array(sorted(test_set))}


def source_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """`(images (N, 8, 8) float32 in [0, 1], labels (N,) int64)` of the source digits of `split`."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = _load()
    idx = split_indices()[split]
    return images[idx], labels[idx]


def render_digit(glyph: np.ndarray, size: int) -> torch.Tensor:
    """Scale an 8×8 glyph to `size`×`size` intensities in [0, 1] (bilinear, antialiased)."""
    t = torch.from_numpy(np.ascontiguousarray(glyph))[None, None]  # (1, 1, 8, 8)
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return up[0, 0].clamp_(0.0, 1.0)  # (size, size)


def paint(canvas: torch.Tensor, ink: torch.Tensor, x: int, y: int, colour: torch.Tensor) -> None:
    """Alpha-composite glyph intensities `ink` (h, w) in `colour` (3,) onto `canvas` (3, H, W) at (x, y)."""
    h, w = ink.shape
    region = canvas[:, y : y + h, x : x + w]
    region.mul_(1 - ink).add_(ink * colour[:, None, None])


def ink_box(ink: torch.Tensor) -> tuple[int, int, int, int]:
    """Tight box `(x0, y0, x1, y1)` (x1, y1 exclusive) around a non-empty boolean mask."""
    ys = torch.nonzero(ink.any(dim=1)).flatten()
    xs = torch.nonzero(ink.any(dim=0)).flatten()
    if len(ys) == 0:
        raise ValueError("no ink in mask")
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def sample_rng(seed: int, split: str, index: int, salt: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, split, index, salt): lazy, order-free generation."""
    return np.random.default_rng([seed, SPLITS.index(split), index, salt])
