"""Pictures of maps: overlays of a map on its image, colour bars, flags (no pyplot) and the labelled grid of
images × methods — the primitives live in `report.draw`, the grid in `report.grid`; this module is their one
public name (`figures.grid`, `figures.overlay`, `figures.save_png`, ...).

Everything returns or writes uint8 RGB arrays; PNGs are written atomically. Colours follow
`report.colours` (sequential `inferno`, signed `RdBu_r` centred on 0 with 0 transparent); maps that say
nothing (all zero, constant, NaN) carry their flag on the tile (`report.flags`).
"""

from __future__ import annotations

from attnscope.report.draw import (
                                   FLAG_COLOUR,
                                   KIND_ORDER,
                                   as_batch,
                                   by_kind,
                                   colorize,
                                   column_scales,
                                   draw_box,
                                   draw_colour_bar,
                                   draw_flag,
                                   elide,
                                   font,
                                   overlay,
                                   save_png,
                                   to_rgb,
)
from attnscope.report.grid import grid

__all__ = ["FLAG_COLOUR", "KIND_ORDER", "as_batch", "by_kind", "colorize", "column_scales", "draw_box",
           "draw_colour_bar", "draw_flag", "elide", "font", "grid", "overlay", "save_png", "to_rgb"]
