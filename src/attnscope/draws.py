"""Random draws per image: each image's draw comes from its own generator, seeded by the run's seed and the
image's index in the data set, so what an image draws does not depend on which other images share its batch
(the shard size and the number of processes of a streamed run leave the numbers unchanged)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnscope.errors import InputError

_MASK = (1 << 63) - 1


def image_seed(seed: int, index: int, stream: int = 0) -> int:
    """The seed of image `index`'s draws number `stream` under the run's `seed` (a fixed mix, < 2⁶³)."""
    return ((int(seed) * 1_000_003 + int(index)) * 1_000_033 + int(stream)) & _MASK


def indices(index: torch.Tensor | None, b: int) -> torch.Tensor:
    """The data-set index of each of `b` images: `index` checked as (b,), or 0 … b − 1."""
    if index is None:
        return torch.arange(b)
    index = torch.as_tensor(index).cpu().long().flatten()
    if index.numel() != b:
        raise InputError(f"index must give one data-set index per image ({b}), got {index.numel()}")
    return index


def per_image(draw: Callable[[torch.Generator], torch.Tensor], seed: int, index: torch.Tensor,
              stream: int | torch.Tensor = 0) -> torch.Tensor:
    """`draw(generator)` for every image, stacked on a new first dimension; image r draws from
    `image_seed(seed, index[r], stream[r])` (`stream` one int for all, or one per image)."""
    streams = torch.as_tensor(stream).long().flatten().expand(len(index)) if not isinstance(stream, int) else None
    return torch.stack([draw(torch.Generator().manual_seed(
        image_seed(seed, int(i), stream if streams is None else int(streams[r])))) for r, i in enumerate(index)])
