"""`SanityResult`: per-image similarities of a randomisation test, its tidy table and the maps it drew."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from attnscope.metrics.similarity import mean_ci, mean_ci_of_sums

COLUMNS = ("method", "block", "depth", "metric", "mean", "ci_low", "ci_high", "n")


@dataclass
class SanityResult:
    """What a randomisation test measured.

    `steps`: the randomised blocks in the order the test took them (top-down from the logits for a
    cascade), or `["permuted-labels"]` for the data test. `scores[method][step][metric]` holds one
    similarity per image (B,) between the map of the trained model and the map after that step;
    NaN where a correlation is undefined (a constant map). `maps["trained"]` and `maps[step]` hold
    `{method: (K, H, W)}` for the first K images (`images`), for drawing. `sums`: the sums (n, Σx, Σx²)
    of each cell's defined values, where the result was merged from the shards of a streamed run.
    """

    test: str
    steps: list[str]
    scores: dict[str, dict[str, dict[str, torch.Tensor]]]
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    images: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sums: dict[tuple[str, str, str], torch.Tensor] | None = None  # (n, Σx, Σx²) per cell, when merged from shards

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def rows(self, level: float = 0.95) -> list[dict[str, Any]]:
        """The tidy table: one row per (method, block, metric) with the mean over images and its CI."""
        out = []
        for method, by_step in self.scores.items():
            for depth, step in enumerate(self.steps, 1):
                for metric in by_step[step]:
                    mean, low, high, n = self._stats(method, step, metric, level)
                    out.append(dict(zip(COLUMNS, (method, step, depth, metric, mean, low, high, n), strict=True)))
        return out

    def value(self, method: str, step: str, metric: str) -> float:
        """The mean of one cell of the table (over the images where it is defined)."""
        return self._stats(method, step, metric)[0]

    def _stats(self, method: str, step: str, metric: str, level: float = 0.95) -> tuple[float, float, float, int]:
        """Mean, CI and n of a cell: from the per-image values, or from the shards' sums when merged from them."""
        if self.sums is not None:
            return mean_ci_of_sums(self.sums[(method, step, metric)], level)
        return mean_ci(self.scores[method][step][metric], level)
