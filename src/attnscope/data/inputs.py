"""The images a command explains: a folder, one file or a built-in data set, fitted to one input size.

`images_of(source, n, seed, fit)` gives them as a lazily read data set of (image, label) items (label −1 for
a file, which has none): `FolderImages` or `NamedData`. A streamed run reads it shard by shard; an in-memory
run reads it whole with `read_all`, which also keeps the original photos and their placements for drawing
maps back onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope.errors import DataError, InputError

RESIZE_HINT = ("--resize shorter=224 --crop center (keeps the aspect ratio, crops the middle), "
               "--resize longer=224 --pad (keeps everything, pads with zeros) or --size 224 (squashes)")


def existing_input(source: str, flag: str) -> Path | None:
    """`source` as a path when it exists (a regular file or a folder), else None; a FIFO or device is refused.

    Reading a FIFO blocks until something writes to it, and /dev/zero never ends.
    """
    path = Path(source)
    if not path.exists():
        return None
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{flag} {source} is not a regular file or folder (a FIFO, device or socket); give image "
                         "files or a folder of them")
    return path


class FolderImages(Dataset):
    """Image files read one at a time (3, H, W) in [0, 1], fitted by `fit` (a `data.geometry.Fit`); label −1."""

    def __init__(self, paths: Sequence[Path], fit: Any = None) -> None:
        self.paths, self.fit = list(paths), fit
        if fit is None:  # one input size: checked on the headers before anything runs
            from PIL import Image

            from attnscope.data.folder import _PIL_ERRORS, same_size

            shapes: dict[tuple[int, int], Path] = {}
            for p in self.paths:
                try:
                    with Image.open(p) as im:
                        shapes.setdefault((im.height, im.width), p)
                except _PIL_ERRORS as e:
                    raise DataError(f"cannot read image {p}: {e}") from None
            same_size(shapes, hint=f"pass {RESIZE_HINT}")

    def __len__(self) -> int:
        return len(self.paths)

    def photo(self, i: int) -> tuple[torch.Tensor, int]:
        """Image i as read (3, h, w), before any fit, and its label (−1)."""
        from attnscope.data import read_image

        return read_image(self.paths[i]), -1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return fitted(self, i)[:2]

    def source(self, i: int) -> dict[str, Any]:
        return {"name": self.paths[i].stem, "path": str(self.paths[i])}


class NamedData(Dataset):
    """`n` samples of a built-in classification data set (test split, built with `config`), as (image, label)."""

    def __init__(self, name: str, n: int, seed: int, fit: Any = None, config: dict[str, Any] | None = None) -> None:
        from attnscope import data

        self.name, self.data, self.fit = name, data.get(name, "test", n, seed=seed, **(config or {})), fit
        self.n = min(n, len(self.data))  # a fixed set (the photos) may hold fewer
        self.captions = getattr(self.data, "kind", None) == "captioning"  # scenes for prompts (--text): no labels
        if not hasattr(self.data[0], "label") and not self.captions:
            raise DataError(f"data set {name!r} has no class labels to explain; use a classification data set")

    def __len__(self) -> int:
        return self.n

    def photo(self, i: int) -> tuple[torch.Tensor, int]:
        """Sample i's image before any fit, and its label (−1 in a captioning data set)."""
        sample = self.data[i]
        return sample.image, -1 if self.captions else int(sample.label)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return fitted(self, i)[:2]

    def source(self, i: int) -> dict[str, Any]:
        return {"name": f"{self.name}-{i:04d}", "data": self.name, "index": i}


def fitted(images: FolderImages | NamedData, i: int) -> tuple[torch.Tensor, int, torch.Tensor, Any]:
    """(model input, label, the photo as read, its `Placement` or None) of image i."""
    photo, label = images.photo(i)
    if images.fit is None:
        return photo, label, photo, None
    placement = images.fit.place(photo.shape[-2], photo.shape[-1], images.source(i)["name"])
    return placement.apply(photo).clamp(0, 1), label, photo, placement


def images_of(source: str, n: int | None, seed: int, fit: Any = None,
              config: dict[str, Any] | None = None) -> FolderImages | NamedData:
    """The images `--images` names as a lazily read data set: every image of a folder (or one file), or `n`
    samples of a built-in data set (built with `seed` and `config`)."""
    from attnscope import data

    if existing_input(source, "--images") is not None:  # a FIFO or a device is refused, not read forever
        from attnscope.data.folder import image_paths

        return FolderImages(image_paths(source), fit)  # all of them: n counts data set samples
    if source in data.names():
        if n is None or n < 1:
            raise InputError(f"--n must be >= 1, got {n}")
        return NamedData(source, n, seed, fit, config)
    raise DataError(f"--images {source}: no such file or folder, and not a built-in data set "
                    f"({', '.join(data.names())})")


class Unlabelled(Dataset):
    """The images of a data set with label −1 (explain or score the class the model predicts); everything
    else (its sources, the samples it reads) as the data set has it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[i][0], -1

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a DataLoader worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


@dataclass
class Inputs:
    """Model inputs (B, 3, H, W) in [0, 1], one description each, labels (B,) or None, and, where a `Fit`
    changed the images, the original photos (3, h, w) and their placements in the input."""

    images: torch.Tensor
    sources: list[dict[str, Any]]
    labels: torch.Tensor | None = None
    originals: list[torch.Tensor] | None = None
    placements: list[Any] | None = None  # data.geometry.Placement per image


def read_all(images: FolderImages | NamedData) -> Inputs:
    """Every image of `images` in memory (the one shard of an in-memory run), with what drawing needs."""
    items = [fitted(images, i) for i in range(len(images))]
    labels = torch.tensor([item[1] for item in items])
    sources = [images.source(i) for i in range(len(images))]
    x = torch.stack([item[0] for item in items])
    if images.fit is None:
        return Inputs(x, sources, None if bool((labels < 0).all()) else labels)
    return Inputs(x, sources, None if bool((labels < 0).all()) else labels, [item[2] for item in items],
                  [item[3] for item in items])
