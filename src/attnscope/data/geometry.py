"""Photos of any size to one model input size, and the model's maps back onto the photo.

`Fit` is how every image becomes the model's input, with torchvision's conventions:
`Fit("shorter", 256, crop=(224, 224))` is `Resize(256)` then `CenterCrop(224)` (aspect kept, the
middle kept); `Fit("longer", 224, pad=(224, 224))` letterboxes (aspect kept, everything kept, zeros
around it); `Fit("exact", (224, 224))` squashes. `fit.place(h, w)` gives the `Placement` of one
image: `apply(image)` makes the input, `invert(maps)` puts maps of the input back on the original
photo (NaN where the input did not see it: the cropped-off sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from attnscope.errors import InputError

RESIZES = ("shorter", "longer", "exact")


@dataclass(frozen=True)
class Placement:
    """Where one photo (h, w) lands in the input: resized to `resized`, its top-left corner at
    (`top`, `left`) of the (H, W) input (negative where cropped, positive where padded)."""

    source: tuple[int, int]
    resized: tuple[int, int]
    top: int
    left: int
    out: tuple[int, int]

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """(C, h, w) image → (C, H, W) model input (bilinear with antialiasing, then crop or zero pad)."""
        if tuple(image.shape[-2:]) != self.source:
            raise InputError(f"image {tuple(image.shape[-2:])} is not the {self.source} this placement is for")
        x = _resize(image[None].float(), self.resized)[0]
        out = x.new_zeros((x.shape[0], *self.out))
        (oy, sy, ny), (ox, sx, nx) = self._overlap()
        out[:, oy : oy + ny, ox : ox + nx] = x[:, sy : sy + ny, sx : sx + nx]
        return out

    def invert(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W) maps of the input → (B, h, w) on the original photo; NaN where it was cropped away."""
        if tuple(maps.shape[-2:]) != self.out:
            raise InputError(f"maps {tuple(maps.shape[-2:])} are not of the input size {self.out}")
        (oy, sy, ny), (ox, sx, nx) = self._overlap()
        frame = maps.new_full((maps.shape[0], *self.resized), float("nan"), dtype=torch.float32)
        frame[:, sy : sy + ny, sx : sx + nx] = maps[:, oy : oy + ny, ox : ox + nx].float()
        if self.resized == self.source:
            return frame
        known = (~torch.isnan(frame)).float()
        values = _resize(torch.nan_to_num(frame)[:, None] * known[:, None], self.source, antialias=False)[:, 0]
        weight = _resize(known[:, None], self.source, antialias=False)[:, 0]
        return torch.where(weight > 0.5, values / weight.clamp_min(1e-6), torch.full_like(values, float("nan")))

    def to_dict(self) -> dict[str, Any]:
        return {"original": list(self.source), "resized": list(self.resized), "offset": [self.top, self.left],
                "input": list(self.out)}

    def _overlap(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Per axis: (start in the input, start in the resized photo, length) of what both share."""
        axes = []
        for offset, size, out in ((self.top, self.resized[0], self.out[0]), (self.left, self.resized[1], self.out[1])):
            o, s = max(offset, 0), max(-offset, 0)
            axes.append((o, s, max(0, min(out - o, size - s))))
        return axes[0], axes[1]


@dataclass(frozen=True)
class Fit:
    """How images of any size become one input size (see the module's docstring)."""

    resize: str = "exact"  # "shorter" | "longer" | "exact"
    size: int | tuple[int, int] = 224  # the side for shorter/longer, (H, W) for exact
    crop: tuple[int, int] | None = None  # centre crop to (H, W)
    pad: tuple[int, int] | None = None  # zero pad, centred, to (H, W)

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise InputError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        sizes = [self.size] if isinstance(self.size, int) else list(self.size)
        if self.resize == "exact" and len(sizes) == 1:
            sizes *= 2
        if self.resize != "exact" and len(sizes) != 1 or not all(isinstance(v, int) and v >= 1 for v in sizes):
            raise InputError(f"resize {self.resize} takes one positive side (exact: H, W), got {self.size!r}")
        if self.crop is not None and self.pad is not None:
            raise InputError("crop and pad exclude each other: crop keeps the middle, pad keeps everything")
        for name, hw in (("crop", self.crop), ("pad", self.pad)):
            if hw is not None and (len(hw) != 2 or min(hw) < 1):
                raise InputError(f"{name} must be (H, W) positive, got {hw!r}")

    def place(self, h: int, w: int, name: str = "the image") -> Placement:
        """The placement of an (h, w) photo; a crop larger than the resized photo (or a pad smaller) raises."""
        resized = self._resized(h, w)
        if self.crop is not None:
            if self.crop[0] > resized[0] or self.crop[1] > resized[1]:
                raise InputError(f"{name} resized to {resized[0]}x{resized[1]} is smaller than the crop "
                                 f"{self.crop[0]}x{self.crop[1]}: resize it to at least the crop's size")
            top = -int(round((resized[0] - self.crop[0]) / 2.0))  # torchvision's CenterCrop
            left = -int(round((resized[1] - self.crop[1]) / 2.0))
            return Placement((h, w), resized, top, left, self.crop)
        if self.pad is not None:
            if self.pad[0] < resized[0] or self.pad[1] < resized[1]:
                raise InputError(f"{name} resized to {resized[0]}x{resized[1]} does not fit the pad "
                                 f"{self.pad[0]}x{self.pad[1]}: resize the longer side to at most the pad's")
            return Placement((h, w), resized, (self.pad[0] - resized[0]) // 2, (self.pad[1] - resized[1]) // 2,
                             self.pad)
        return Placement((h, w), resized, 0, 0, resized)

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        if self.resize == "exact":
            hw = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
            return int(hw[0]), int(hw[1])
        side = self.size if isinstance(self.size, int) else int(self.size[0])
        short, long = (h, w) if h <= w else (w, h)
        if self.resize == "shorter":
            new_short, new_long = side, int(side * long / short)  # torchvision's Resize(int)
        else:
            new_long, new_short = side, int(side * short / long)
        return (new_short, new_long) if h <= w else (new_long, new_short)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "size": self.size, "crop": self.crop, "pad": self.pad}


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = antialias and (size[0] < x.shape[-2] or size[1] < x.shape[-1])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
