"""The drawing primitives of the pictures of maps: overlays of a map on its image, colour bars, flags (no
pyplot); `report.grid` composes them into the labelled grid, `report.figures` is the public face of both.

Everything returns or writes uint8 RGB arrays; PNGs are written atomically. Colours follow
`report.colours` (sequential `inferno`, signed `RdBu_r` centred on 0 with 0 transparent); maps that say
nothing (all zero, constant, NaN) carry their flag on the tile (`report.flags`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from attnscope import fileio
from attnscope.console import elide_middle as elide  # noqa: F401  ("features.3.1" → "feat…3.1", for grids)
from attnscope.errors import InputError
from attnscope.report import colours

KIND_ORDER = ("cam", "gradient", "perturbation", "intrinsic", "transformer")
FLAG_COLOUR = (255, 210, 0)


def font(size: int = 10) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """An image (3, H, W) or (1, H, W) in [0, 1] → uint8 (H, W, 3)."""
    img = image.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def as_batch(values: torch.Tensor, what: str = "maps") -> torch.Tensor:
    """Maps (H, W) or (B, H, W) as (B, H, W); (B, K, H, W) with K > 1 is refused, naming the way out."""
    if not isinstance(values, torch.Tensor):
        raise InputError(f"{what} must be a tensor (B, H, W), got {type(values).__name__}")
    if values.dim() == 4 and values.shape[1] == 1:
        values = values[:, 0]
    if values.dim() == 4:
        raise InputError(f"{what} hold {values.shape[1]} maps per image {tuple(values.shape)} (B, K, H, W): pick "
                         "one target or time step, e.g. values[:, k] (attnscope.show(..., target=k))")
    if values.dim() == 2:
        values = values[None]
    if values.dim() != 3:
        raise InputError(f"{what} must be (H, W) or (B, H, W), got {tuple(values.shape)}")
    return values


def colorize(map_: torch.Tensor, signed: bool | None = None) -> np.ndarray:
    """A map (H, W) through its colour map at full opacity → uint8 (H, W, 3)."""
    values = as_batch(map_)
    sign = colours.is_signed(values) if signed is None else signed
    rgba = colours.rgba(colours.scale(values, sign).unit(values), sign, alpha=1.0)[0]
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: torch.Tensor, map_: torch.Tensor, alpha: float | None = None, signed: bool | None = None,
            limits: colours.Scale | None = None, index: int = 0) -> np.ndarray:
    """The map, colour-coded by the rule of `report.colours`, over the image → uint8 (H, W, 3).

    `limits`: a `Scale` shared with other images (its entry `index` is used); default: this map's own.
    """
    values = as_batch(map_)
    if limits is None:
        sign = colours.is_signed(values) if signed is None else signed
        limits, index = colours.scale(values, sign), 0
    one = colours.Scale(limits.signed, limits.low[index : index + 1], limits.high[index : index + 1], limits.rule)
    layer = colours.rgba(one.unit(values[:1]), limits.signed, alpha)[0]
    base = to_rgb(image)
    if base.shape[:2] != layer.shape[:2]:
        raise InputError(f"image {base.shape[:2]} and map {layer.shape[:2]} differ in size (H, W)")
    return colours.blend(base, layer)


def draw_box(
    rgb: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = (255, 255, 255), scale: float = 1
) -> np.ndarray:
    """A copy of `rgb` with the rectangle `(x0, y0, x1, y1)` (x1, y1 exclusive) drawn on it, `scale`d."""
    img = Image.fromarray(rgb)
    x0, y0, x1, y1 = (round(int(v) * scale) for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour)
    return np.asarray(img)


def draw_flag(rgb: np.ndarray, text: str, bottom: bool = False) -> np.ndarray:
    """A copy of `rgb` with `text` written in its top-left (or bottom-left) corner on a dark band."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    f = font(10 if rgb.shape[1] < 96 else 11)
    x0, y0, x1, y1 = draw.textbbox((2, 1), text, font=f)
    top = rgb.shape[0] - (y1 + 2) if bottom else 0
    draw.rectangle([0, top, min(x1 + 2, rgb.shape[1] - 1), top + y1 + 1], fill=(0, 0, 0))
    draw.text((2, top + 1), text, fill=FLAG_COLOUR, font=f)
    return np.asarray(img)


def by_kind(names: Sequence[str], kinds: Mapping[str, str | None] | None) -> list[str]:
    """`names` grouped by kind (cam, gradient, perturbation, intrinsic, transformer, others), stable."""
    if not kinds:
        return list(names)
    rank = lambda n: KIND_ORDER.index(kinds.get(n)) if kinds.get(n) in KIND_ORDER else len(KIND_ORDER)
    return sorted(names, key=rank)


def column_scales(maps: Mapping[str, torch.Tensor], signed: Mapping[str, bool] | None = None,
                  options: Mapping[str, Mapping[str, Any]] | None = None, shared: bool = False
                  ) -> dict[str, colours.Scale]:
    """The `Scale` of each method's maps (signed by `signed`, else by the rule of `report.colours`)."""
    out = {}
    for name, values in maps.items():
        sign = (signed or {}).get(name)
        if sign is None:
            sign = colours.is_signed(values, name, (options or {}).get(name))
        out[name] = colours.scale(values, sign, shared=shared)
    return out


def draw_colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, limits: colours.Scale, at: tuple[int, int],
                    width: int, f: Any, labels: bool = True, index: int | None = None) -> None:
    """The colour bar of `limits`, `width` px wide at `at`, with what its ends (and middle) mean under it
    (the values of entry `index` when one scale holds for the column)."""
    x, y = at
    canvas.paste(Image.fromarray(colours.colour_bar(limits.signed, width - 4, 6)), (x + 2, y))
    if not labels:
        return
    low, mid, high = limits.labels(index)
    draw.text((x + 2, y + 8), low, fill=(0, 0, 0), font=f)
    if mid:
        draw.text((x + width // 2 - 3, y + 8), mid, fill=(0, 0, 0), font=f)
    right = draw.textlength(high, font=f)
    draw.text((x + width - 2 - right, y + 8), high, fill=(0, 0, 0), font=f)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as a PNG, atomically."""
    fileio.write_with(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
