"""Pictures of maps: overlays of a map on its image and grids of images × methods (no pyplot).

Everything returns or writes uint8 RGB arrays; PNGs are written atomically. Colours follow
`report.colours` (sequential `inferno`, signed `RdBu_r` centred on 0 with 0 transparent); every
grid has a colour bar per column and a line saying how each tile was scaled, and maps that say
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
from attnscope.console import elide_middle as elide  # "features.3.1" → "feat…3.1": both ends stay
from attnscope.errors import InputError
from attnscope.report import colours
from attnscope.report.flags import flags as find_flags

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
    rgb: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = (255, 255, 255), scale: int = 1
) -> np.ndarray:
    """A copy of `rgb` with the rectangle `(x0, y0, x1, y1)` (x1, y1 exclusive) drawn on it."""
    img = Image.fromarray(rgb)
    x0, y0, x1, y1 = (int(v) * scale for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour)
    return np.asarray(img)


def draw_flag(rgb: np.ndarray, text: str) -> np.ndarray:
    """A copy of `rgb` with `text` written in its top-left corner on a dark band."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    f = font(9 if rgb.shape[1] < 96 else 10)
    x0, y0, x1, y1 = draw.textbbox((2, 1), text, font=f)
    draw.rectangle([0, 0, min(x1 + 2, rgb.shape[1] - 1), y1 + 1], fill=(0, 0, 0))
    draw.text((2, 1), text, fill=FLAG_COLOUR, font=f)
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


def grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    boxes: torch.Tensor | None = None,
    scale: int = 2,
    label_height: int = 14,
    kinds: Mapping[str, str | None] | None = None,
    signed: Mapping[str, bool] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Rows = images, columns = the image then one overlay per method (grouped by `kinds`), names on top,
    a colour bar under each column and a line on how the tiles were scaled."""
    b, _, h, w = images.shape
    maps = {k: as_batch(v, f"maps[{k!r}]") for k, v in maps.items()}
    names = by_kind(list(maps), kinds)
    scales = column_scales(maps, signed, options)
    cols = ["image", *names]
    ch, cw = h * scale, w * scale
    head = label_height * (2 if kinds else 1)
    foot = 30 if cw >= 48 else 12
    canvas = Image.new("RGB", (len(cols) * (cw + 2), head + b * (ch + 2) + foot + 14), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    f = font(10)
    if kinds:
        _kind_headers(draw, names, kinds, cw, f)
    for j, name in enumerate(cols):
        draw.text((j * (cw + 2) + 2, head - label_height + 1), elide(name, max(4, cw // 6)), fill=(0, 0, 0), font=f)
    for i in range(b):
        for j, name in enumerate(cols):
            tile = to_rgb(images[i]) if name == "image" else overlay(images[i], maps[name][i], limits=scales[name],
                                                                      index=i)
            tile = np.asarray(Image.fromarray(tile).resize((cw, ch), Image.NEAREST))
            if boxes is not None:
                tile = draw_box(tile, boxes[i].tolist(), scale=scale)
            flag = None if name == "image" else find_flags(maps[name][i][None])[0]
            if flag is not None:
                tile = draw_flag(tile, flag)
            canvas.paste(Image.fromarray(tile), (j * (cw + 2), head + i * (ch + 2)))
    y = head + b * (ch + 2) + 2
    for j, name in enumerate(names, start=1):
        draw_colour_bar(canvas, draw, scales[name], (j * (cw + 2), y), cw, f, labels=foot > 12)
    used = {s.signed for s in scales.values()}
    note = "; ".join(f"{'signed' if s else 'sequential'}: {colours.meaning(s)}" for s in sorted(used))
    draw.text((2, y + foot), elide(f"each tile scaled per image. {note}", len(cols) * (cw + 2) // 5), fill=(80, 80, 80),
              font=font(9))
    return np.asarray(canvas)


def _kind_headers(draw: ImageDraw.ImageDraw, names: Sequence[str], kinds: Mapping[str, str | None], cw: int,
                  f: Any) -> None:
    """One label per run of columns of the same kind, over those columns, with a rule under it."""
    start = 0
    for j in range(1, len(names) + 1):
        if j == len(names) or kinds.get(names[j]) != kinds.get(names[start]):
            x0, x1 = (start + 1) * (cw + 2), (j + 1) * (cw + 2) - 4
            draw.text((x0 + 2, 1), elide(str(kinds.get(names[start]) or ""), max(4, (x1 - x0) // 6)),
                      fill=(90, 90, 90), font=f)
            draw.line([x0 + 2, 13, x1, 13], fill=(170, 170, 170))
            start = j


def draw_colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, limits: colours.Scale, at: tuple[int, int],
                    width: int, f: Any, labels: bool = True) -> None:
    """The colour bar of `limits`, `width` px wide at `at`, with what its ends (and middle) mean under it."""
    x, y = at
    canvas.paste(Image.fromarray(colours.colour_bar(limits.signed, width - 4, 6)), (x + 2, y))
    if not labels:
        return
    low, mid, high = limits.labels()
    draw.text((x + 2, y + 8), low, fill=(0, 0, 0), font=f)
    if mid:
        draw.text((x + width // 2 - 3, y + 8), mid, fill=(0, 0, 0), font=f)
    right = draw.textlength(high, font=f)
    draw.text((x + width - 2 - right, y + 8), high, fill=(0, 0, 0), font=f)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as a PNG, atomically."""
    fileio.write_with(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
