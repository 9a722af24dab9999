"""Metrics: pure tensor functions over attention maps and ground truth."""

from __future__ import annotations

from attnscope.metrics.localisation import box_masks, energy_in_box, pointing_game
from attnscope.metrics.masks import jaccard

__all__ = ["box_masks", "energy_in_box", "jaccard", "pointing_game"]
