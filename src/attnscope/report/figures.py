"""Pictures of maps: overlays of a map on its image and grids of images × methods (matplotlib-free).

Everything returns or writes uint8 RGB arrays; PNGs are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

from attnscope import fileio
from attnscope.maps import normalize


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """An image (3, H, W) or (1, H, W) in [0, 1] → uint8 (H, W, 3)."""
    img = image.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def colorize(map_: torch.Tensor, cmap: str = "jet") -> np.ndarray:
    """A map (H, W), min–max normalised, through a colormap → uint8 (H, W, 3)."""
    m = normalize(map_.detach().float().cpu()[None])[0].numpy()
    return (colormaps[cmap](m)[..., :3] * 255).round().astype(np.uint8)


def overlay(image: torch.Tensor, map_: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The map, colour-coded, blended over the image → uint8 (H, W, 3)."""
    base = to_rgb(image).astype(np.float32)
    heat = colorize(map_, cmap).astype(np.float32)
    return ((1 - alpha) * base + alpha * heat).round().astype(np.uint8)


def draw_box(
    rgb: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = (255, 255, 255), scale: int = 1
) -> np.ndarray:
    """A copy of `rgb` with the rectangle `(x0, y0, x1, y1)` (x1, y1 exclusive) drawn on it."""
    img = Image.fromarray(rgb)
    x0, y0, x1, y1 = (int(v) * scale for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour)
    return np.asarray(img)


def grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    boxes: torch.Tensor | None = None,
    scale: int = 2,
    label_height: int = 14,
) -> np.ndarray:
    """Rows = images, columns = the image then one overlay per method; method names on top."""
    b, _, h, w = images.shape
    cols = ["image", *maps]
    ch, cw = h * scale, w * scale
    canvas = np.full((label_height + b * (ch + 2), len(cols) * (cw + 2), 3), 255, np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for j, name in enumerate(cols):
        draw.text((j * (cw + 2) + 2, 1), name[: max(4, cw // 6)], fill=(0, 0, 0))
    canvas = np.asarray(pil).copy()
    for i in range(b):
        for j, name in enumerate(cols):
            tile = to_rgb(images[i]) if name == "image" else overlay(images[i], maps[name][i])
            tile = np.asarray(Image.fromarray(tile).resize((cw, ch), Image.NEAREST))
            if boxes is not None:
                tile = draw_box(tile, boxes[i].tolist(), scale=scale)
            y, x = label_height + i * (ch + 2), j * (cw + 2)
            canvas[y : y + ch, x : x + cw] = tile
    return canvas


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as a PNG, atomically."""
    fileio.write_with(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
