"""The leaderboard's columns: every metric declared in `attnscope.metrics` (`metrics.declare`), as a function of
a method's maps (B, H, W) and the `Batch` it explains, with its group, direction and the ground truth it needs.

The declarations live beside the metric functions; this module is the leaderboard's name for them, so the
leaderboard, the CLI's `--metrics` filter and the time estimate read the one registry (`COLUMNS` is
`attnscope.metrics.METRICS`). Robustness and focus are columns too, but they read maps of other images
(perturbed copies, mosaics), which the leaderboard explains for all methods at once (`per_method=False`).
"""

from __future__ import annotations

import attnscope.metrics  # noqa: F401  (every family's declarations)
from attnscope.metrics.declare import GROUPS, METRICS, Batch, Metric, columns, select

COLUMNS = METRICS
Column = Metric  # the name before 0.2

__all__ = ["COLUMNS", "GROUPS", "Batch", "Column", "Metric", "columns", "select"]
