"""2×2 mosaics for the Focus metric (Arias-Duart et al., 2022): four images in one, two of them of
the class to explain and two of other classes, so that a faithful map puts its mass on two quadrants."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from attnscope.errors import InputError


@dataclass(frozen=True)
class MosaicBatch:
    """Mosaics (N, C, 2H, 2W), the class shown twice in each (N,), and its quadrants (N, 4) bool
    in the order top-left, top-right, bottom-left, bottom-right."""

    images: torch.Tensor
    labels: torch.Tensor
    quadrants: torch.Tensor


def mosaics(dataset: Dataset, n: int, seed: int = 0, pool: int | None = None) -> MosaicBatch:
    """`n` mosaics from the (image, label, ...) samples of `dataset`: each takes two images of one
    class and two of two other, different classes, in random quadrants, all drawn from `seed`
    among the first `pool` samples (default: all)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the number of mosaics must be a positive integer, got {n!r}")
    pool = len(dataset) if pool is None else min(pool, len(dataset))
    samples = [dataset[i] for i in range(pool)]
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(int(s[1]), []).append(i)
    twice = sorted(c for c, idx in by_class.items() if len(idx) >= 2)
    if not twice or len(by_class) < 3:
        raise InputError("mosaics need a class with two images and two other classes among the samples")
    g = torch.Generator().manual_seed(seed)
    pick = lambda items: items[int(torch.randint(len(items), (1,), generator=g))]  # noqa: E731
    images, labels, quadrants = [], [], []
    for k in range(n):
        target = twice[k % len(twice)]
        first, second = torch.randperm(len(by_class[target]), generator=g)[:2].tolist()
        others = [c for c in by_class if c != target]
        order = torch.randperm(len(others), generator=g)[:2].tolist()
        tiles = [by_class[target][first], by_class[target][second], *(pick(by_class[others[o]]) for o in order)]
        place = torch.randperm(4, generator=g)  # tile j goes to quadrant place[j]
        grid = [None] * 4
        for j, q in enumerate(place.tolist()):
            grid[q] = samples[tiles[j]][0]
        top, bottom = torch.cat(grid[:2], dim=2), torch.cat(grid[2:], dim=2)
        images.append(torch.cat([top, bottom], dim=1))
        labels.append(target)
        quadrants.append(torch.isin(torch.arange(4), place[:2]))
    return MosaicBatch(torch.stack(images), torch.tensor(labels), torch.stack(quadrants))
