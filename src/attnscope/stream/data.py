"""The images of a streamed run as lazily read data sets: a folder's files, or samples of a built-in data set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope.errors import DataError


class FolderImages(Dataset):
    """Image files read one at a time (3, H, W) in [0, 1], fitted by `fit` (a `data.geometry.Fit`); label −1."""

    def __init__(self, paths: Sequence[Path], fit: Any = None) -> None:
        self.paths, self.fit = list(paths), fit
        if fit is None:  # one input size: checked on the headers before anything runs
            from PIL import Image

            from attnscope.data.folder import same_size

            shapes: dict[tuple[int, int], Path] = {}
            for p in self.paths:
                with Image.open(p) as im:
                    shapes.setdefault((im.height, im.width), p)
            same_size(shapes, hint="pass --resize (with --crop or --pad) or --size")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from attnscope.data import read_image

        photo = read_image(self.paths[i])
        if self.fit is not None:
            photo = self.fit.place(photo.shape[-2], photo.shape[-1], self.paths[i].stem).apply(photo).clamp(0, 1)
        return photo, -1

    def source(self, i: int) -> dict[str, Any]:
        return {"name": self.paths[i].stem, "path": str(self.paths[i])}


class NamedData(Dataset):
    """`n` samples of a built-in classification data set (test split, built with `config`), as (image, label)."""

    def __init__(self, name: str, n: int, seed: int, fit: Any = None, config: dict[str, Any] | None = None) -> None:
        from attnscope import data

        self.name, self.data, self.fit = name, data.get(name, "test", n, seed=seed, **(config or {})), fit
        self.n = min(n, len(self.data))
        if not hasattr(self.data[0], "label"):
            raise DataError(f"data set {name!r} has no class labels to explain; use a classification data set")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.data[i]
        image = sample.image
        if self.fit is not None:
            image = self.fit.place(image.shape[-2], image.shape[-1], f"{self.name}-{i:04d}").apply(image).clamp(0, 1)
        return image, int(sample.label)

    def source(self, i: int) -> dict[str, Any]:
        return {"name": f"{self.name}-{i:04d}", "data": self.name, "index": i}
