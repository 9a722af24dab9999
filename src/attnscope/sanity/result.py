"""`SanityResult`: per-image similarities of a randomisation test, its tidy table and the maps it drew."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from attnscope.metrics.similarity import mean_ci

COLUMNS = ("method", "block", "depth", "metric", "mean", "ci_low", "ci_high", "n")


@dataclass
class SanityResult:
    """What a randomisation test measured.

    `steps`: the randomised blocks in the order the test took them (top-down from the logits for a
    cascade), or `["permuted-labels"]` for the data test. `scores[method][step][metric]` holds one
    similarity per image (B,) between the map of the trained model and the map after that step;
    NaN where a correlation is undefined (a constant map). `maps["trained"]` and `maps[step]` hold
    `{method: (K, H, W)}` for the first K images (`images`), for drawing.
    """

    test: str
    steps: list[str]
    scores: dict[str, dict[str, dict[str, torch.Tensor]]]
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    images: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def rows(self, level: float = 0.95) -> list[dict[str, Any]]:
        """The tidy table: one row per (method, block, metric) with the mean over images and its CI."""
        out = []
        for method, by_step in self.scores.items():
            for depth, step in enumerate(self.steps, 1):
                for metric, values in by_step[step].items():
                    mean, low, high, n = mean_ci(values, level)
                    out.append(dict(zip(COLUMNS, (method, step, depth, metric, mean, low, high, n), strict=True)))
        return out

    def value(self, method: str, step: str, metric: str) -> float:
        """The mean of one cell of the table (over the images where it is defined)."""
        return mean_ci(self.scores[method][step][metric])[0]
