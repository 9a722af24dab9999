"""A new metric shown by `bench`, the tracker and the report: this one file, the function and its declaration.

`tests/test_metric_declaration.py` imports it (so its column exists only while that test runs) and finds the
column in the leaderboard, the terminal tables, the tracker's measures and the report.
"""

from __future__ import annotations

import torch

from attnscope.metrics import box_masks, declare


@declare("peak_in_box", "localisation", short="peak", legend="share of the map's peak reached in the box",
         bounds=(0, 1))
def peak_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """max_box M / max M per image, 0 where the map has no positive value. (B,)."""
    inside = torch.where(box_masks(boxes, tuple(maps.shape[-2:])), maps, torch.full_like(maps, -torch.inf))
    top = maps.flatten(1).amax(1)
    return torch.where(top > 0, inside.flatten(1).amax(1).clamp_min(0) / top, torch.zeros_like(top))
