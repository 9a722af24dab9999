"""`Photos`: real photographs with ground truth — scikit-image's bundled photos, boxes drawn by hand.

Each sample is one object of one photo that an ImageNet-1k class names (the space shuttle model
beside the astronaut, the cat, the espresso, the rocket, the motorcycle, the bench, the tripod),
with that class id and a box drawn for attnscope and checked on overlays (`photos.json` in this
package). The photos ship with scikit-image: nothing is downloaded. Images are resized to `size`
(aspect not kept, as a classifier's preprocessing does) and the boxes with them.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from attnscope.console import brief_fields
from attnscope.errors import DataError, InputError


class PhotoSample(NamedTuple):
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    label: int  # ImageNet-1k class id of the object
    box: torch.Tensor  # (4,) long: x0, y0, x1, y1 (x1, y1 exclusive) around the object, at `size`
    name: str  # "<photo>-<class name>"


    def __repr__(self) -> str:
        return brief_fields(self)


# Photo name → the skimage.data call that returns it (H, W, 3) or (H, W) uint8.
PHOTOS = {
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "motorcycle_right": lambda d: d.stereo_motorcycle()[1],
    "camera": lambda d: d.camera(),
}


def annotations() -> list[dict]:
    """The hand-drawn objects of `photos.json`: photo, class, class_name, box (in the photo's pixels)."""
    text = resources.files("attnscope.data").joinpath("photos.json").read_text()
    return json.loads(text)["objects"]


@cache
def photo(name: str) -> np.ndarray:
    """Photo `name` as (H, W, 3) uint8 (a greyscale photo as three equal channels)."""
    import skimage.data

    if name not in PHOTOS:
        raise DataError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
    array = np.asarray(PHOTOS[name](skimage.data))
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]


def scaled_box(box: list[int], source: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """A box of a (H, W) photo on the photo resized to `size`: outward-rounded, so it never shrinks."""
    sy, sx = size[0] / source[0], size[1] / source[1]
    x0, y0, x1, y1 = box
    out = [math.floor(x0 * sx), math.floor(y0 * sy), math.ceil(x1 * sx), math.ceil(y1 * sy)]
    return torch.tensor([min(max(v, 0), lim) for v, lim in zip(out, (size[1], size[0]) * 2, strict=True)])


class Photos(Dataset):
    """The annotated objects of scikit-image's photos at `size` (H, W); sample i is `(image, label, box, name)`."""

    kind = "classification"
    num_classes = 1000  # ImageNet-1k ids

    def __init__(self, size: int | tuple[int, int] = 224, n: int | None = None) -> None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(size) < 8:
            raise InputError(f"photos: size must be S or (H, W) of at least 8 px, got {size}")
        self.size = size
        self.objects = annotations()[:n]

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, i: int) -> PhotoSample:
        obj = self.objects[i]
        array = photo(obj["photo"])
        x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
        x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)[0]
        box = scaled_box(obj["box"], array.shape[:2], self.size)
        return PhotoSample(x.clamp(0, 1), int(obj["class"]), box, f"{obj['photo']}-{obj['class_name']}")
