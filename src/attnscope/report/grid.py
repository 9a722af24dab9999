"""A grid of images × methods that says what it shows (no pyplot).

Rows are images, labelled on the left (which image, which class its maps explain, true and predicted
class, probability: `report.labels`); columns are the image and one overlay per method, grouped by kind,
named on top, with a colour bar under each. A grid wider than `width` pixels wraps: the methods continue
in a band below, each band repeating the image column, so no grid needs a 27-column screen. `scale`
says which maps share their limits (`report.colours`: "image", "row", "figure"), and a map whose peak is
far below the strongest of its method in the figure carries a "weak" mark, as a map that says nothing
carries its flag.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from attnscope.errors import InputError
from attnscope.report import colours
from attnscope.report import draw as figures
from attnscope.report.flags import flags as find_flags

WIDTH = 1280  # pixels a grid may take before it wraps (a laptop screen, the report's page)
LABEL_WIDTH = 190  # the row labels' column, at most
GAP = 2
LINE = 15  # pixels per line of text (header rows, row labels)
INK, GREY = (0, 0, 0), (80, 80, 80)


def grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    boxes: torch.Tensor | None = None,
    zoom: float = 2,
    kinds: Mapping[str, str | None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    rows: Sequence[str] | None = None,
    scale: str | int = "image",
    groups: Mapping[str, str] | None = None,
    width: int = WIDTH,
) -> np.ndarray:
    """Rows = images (labelled by `rows`, lines split by newlines), columns = the image then one overlay per
    method (grouped by `kinds`), wrapped into bands at `width` px; a colour bar under each column.

    `scale`: "image" (each map its own limits, the default), "row" or "figure" (maps of one method share
    them across a row or the whole grid); `groups`: column → method, where several columns hold one
    method's maps (e.g. one image's top-5 classes). `zoom`: pixels per map pixel (below 1 shrinks). Each
    method's colour rule (signed or sequential) is `report.colours.is_signed` of its maps and `options`. (An int
    `scale` is the zoom's name before 0.2.)
    """
    if isinstance(scale, int) and not isinstance(scale, bool):
        zoom, scale = scale, "image"  # the old keyword: grid(..., scale=2) magnified
    if scale not in colours.SCALES:
        raise InputError(f"scale must be one of {', '.join(colours.SCALES)}, got {scale!r}")
    b, _, h, w = images.shape
    maps = {k: figures.as_batch(v, f"maps[{k!r}]") for k, v in maps.items()}
    if rows is not None and len(rows) != b:
        raise InputError(f"{len(rows)} row labels for {b} images")
    names = figures.by_kind(list(maps), kinds)
    tiles = _Tiles(images, maps, names, boxes, zoom, options, scale, groups or {})
    label_w = _label_width(rows, tiles.ch)
    per_band = max(1, (width - label_w) // (tiles.cw + GAP) - 1)
    bands = [names[i : i + per_band] for i in range(0, max(len(names), 1), per_band)] or [[]]
    pictures = [_band(tiles, band, rows, label_w, kinds, part=(k + 1, len(bands))) for k, band in enumerate(bands)]
    return _stack([*pictures, _note(tiles, max(p.width for p in pictures))])


class _Tiles:
    """Every tile of a grid, drawn once: the overlays with their scales, flags and weak marks."""

    def __init__(self, images, maps, names, boxes, zoom, options, scale, groups) -> None:
        self.images, self.maps, self.boxes, self.zoom, self.scale = images, maps, boxes, zoom, scale
        self.ch, self.cw = max(1, round(images.shape[2] * zoom)), max(1, round(images.shape[3] * zoom))
        own = figures.column_scales(maps, None, options)
        self.group = {n: groups.get(n, n) for n in names}
        self.scales = dict(own)
        if scale != "image":
            for g in dict.fromkeys(self.group.values()):
                members = [n for n in names if self.group[n] == g]
                for n, pooled in zip(members, colours.pooled([own[n] for n in members], rows=scale == "row"),
                                     strict=True):
                    self.scales[n] = pooled
        self.peaks = {n: colours.peaks(maps[n]) for n in names}
        strongest: dict[str, float] = {}
        for n in names:
            strongest[self.group[n]] = max(strongest.get(self.group[n], 0.0), float(self.peaks[n].max(initial=0)))
        self.strongest = {n: strongest[self.group[n]] for n in names}
        self.flags = {n: find_flags(maps[n]) for n in names}

    def tile(self, i: int, name: str) -> np.ndarray:
        rgb = figures.to_rgb(self.images[i]) if name == "image" else figures.overlay(
            self.images[i], self.maps[name][i], limits=self.scales[name], index=i)
        resample = Image.NEAREST if self.zoom >= 1 else Image.BILINEAR  # shrinking averages, growing keeps pixels
        rgb = np.asarray(Image.fromarray(rgb).resize((self.cw, self.ch), resample))
        if self.boxes is not None:
            rgb = figures.draw_box(rgb, self.boxes[i].tolist(), scale=self.zoom)
        if name == "image":
            return rgb
        flag = self.flags[name][i]
        if flag is not None:
            return figures.draw_flag(rgb, flag)
        peak, top = float(self.peaks[name][i]), self.strongest[name]
        if colours.weak(peak, top):
            rgb = figures.draw_flag(rgb, f"weak: peak {_share(peak / top)} of max", bottom=True)
        return rgb


def _share(x: float) -> str:
    return f"{100 * x:.2g}%" if x >= 0.001 else "<0.1%"


def _label_width(rows: Sequence[str] | None, ch: int) -> int:
    if not rows:
        return 0
    f = figures.font(12)
    longest = max(f.getlength(line) for r in rows for line in str(r).splitlines() or [""])
    return int(min(LABEL_WIDTH, longest + 10))


def _wrapped(text: str, label_w: int, max_lines: int) -> list[str]:
    """The label's lines word-wrapped to the label column (measured in the font), at most `max_lines`."""
    f = figures.font(12)
    lines: list[str] = []
    for line in str(text).splitlines() or [""]:
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}" if current else word
            if current and f.getlength(trial) > label_w - 6:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [figures.elide(" ".join(lines[max_lines - 1 :]), int(label_w / 6.5))]
    return lines


def _band(tiles: _Tiles, names: Sequence[str], rows: Sequence[str] | None, label_w: int,
          kinds: Mapping[str, str | None] | None, part: tuple[int, int]) -> Image.Image:
    """One band of the grid: headers, the rows, the colour bars."""
    b = tiles.images.shape[0]
    ch, cw = tiles.ch, tiles.cw
    line = LINE
    head = line * (2 if kinds else 1) + 2
    small = cw < 96
    foot = 12 if small else 30
    cols = ["image", *names]
    canvas = Image.new("RGB", (label_w + len(cols) * (cw + GAP), head + b * (ch + GAP) + foot),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    f = figures.font(11 if small else 12)
    if kinds:
        _kind_headers(draw, names, kinds, cw, label_w, f)
    for j, name in enumerate(cols):
        title = "image" if name == "image" else name
        if part[1] > 1 and name == "image":
            title = f"image ({part[0]}/{part[1]})"
        draw.text((label_w + j * (cw + GAP) + 2, head - line), figures.elide(title, max(4, cw // 7)), fill=INK, font=f)
    for i in range(b):
        y = head + i * (ch + GAP)
        if rows is not None:
            for k, text in enumerate(_wrapped(rows[i], label_w, max(1, ch // line))):
                draw.text((2, y + k * line), text, fill=INK, font=figures.font(12))
        for j, name in enumerate(cols):
            canvas.paste(Image.fromarray(tiles.tile(i, name)), (label_w + j * (cw + GAP), y))
    y = head + b * (ch + GAP) + 2
    one_scale = tiles.scale == "figure"
    for j, name in enumerate(names, start=1):
        figures.draw_colour_bar(canvas, draw, tiles.scales[name], (label_w + j * (cw + GAP), y), cw, f,
                                labels=not small, index=0 if one_scale else None)
    return canvas


def _note(tiles: _Tiles, width: int) -> Image.Image:
    """How the tiles were scaled and what the colours and marks mean, wrapped to the grid's width."""
    how = {"image": "each map scaled on its own (scale=image)",
           "row": "maps of one method share one scale per row (scale=row)",
           "figure": "maps of one method share one scale over the grid (scale=figure)"}[tiles.scale]
    used = sorted({s.signed for s in tiles.scales.values()})
    meanings = "; ".join(f"{'signed' if s else 'sequential'}: {colours.meaning(s)}" for s in used)
    text = (f"{how}. {meanings}. weak: the map's peak is below {colours.WEAK:.0%} of the strongest map of its "
            "method here.")
    f = figures.font(11)
    lines = textwrap.wrap(text, max(20, int(width / 5.8)))
    strip = Image.new("RGB", (width, 4 + 14 * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, part in enumerate(lines):
        draw.text((2, 2 + k * 14), part, fill=GREY, font=f)
    return strip


def _kind_headers(draw: ImageDraw.ImageDraw, names: Sequence[str], kinds: Mapping[str, str | None], cw: int,
                  left: int, f: Any) -> None:
    """One label per run of columns of the same kind, over those columns, with a rule under it."""
    start = 0
    for j in range(1, len(names) + 1):
        if j == len(names) or kinds.get(names[j]) != kinds.get(names[start]):
            x0, x1 = left + (start + 1) * (cw + GAP), left + (j + 1) * (cw + GAP) - 4
            draw.text((x0 + 2, 1), figures.elide(str(kinds.get(names[start]) or ""), max(4, (x1 - x0) // 7)),
                      fill=(90, 90, 90), font=f)
            draw.line([x0 + 2, 15, x1, 15], fill=(170, 170, 170))
            start = j


def _stack(pictures: Sequence[Image.Image]) -> np.ndarray:
    """Bands one under the other, left-aligned, with a rule between them."""
    width = max(p.width for p in pictures)
    height = sum(p.height for p in pictures) + 8 * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for k, p in enumerate(pictures):
        if k:
            ImageDraw.Draw(canvas).line([0, y + 3, width, y + 3], fill=(200, 200, 200))
            y += 8
        canvas.paste(p, (0, y))
        y += p.height
    return np.asarray(canvas)


def bands_for(n_methods: int, tile: int, width: int = WIDTH, label_w: int = LABEL_WIDTH) -> int:
    """How many bands a grid of `n_methods` columns of `tile` px wraps into at `width` px."""
    per_band = max(1, (width - label_w) // (tile + GAP) - 1)
    return math.ceil(max(n_methods, 1) / per_band)
