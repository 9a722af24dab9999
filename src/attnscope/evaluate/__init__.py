"""Evaluating methods: the leaderboard (every method × every metric), robustness to perturbations,
ground-truth interventions on generated scenes, and the scorers the faithfulness metrics ask.

Sits above `explain`, `metrics` and `sanity` (it explains, scores and reuses the calibration maps).
"""

from __future__ import annotations

from attnscope.evaluate.columns import COLUMNS, GROUPS
from attnscope.evaluate.leaderboard import (
                                          Board,
                                          Mosaics,
                                          Settings,
                                          applicable_methods,
                                          estimate,
                                          leaderboard,
                                          not_applicable,
)
from attnscope.evaluate.robustness import robustness
from attnscope.evaluate.scorers import class_logit, class_probability, correct_class

__all__ = ["COLUMNS", "GROUPS", "Board", "Mosaics", "Settings", "applicable_methods", "class_logit",
           "class_probability", "correct_class", "estimate", "leaderboard", "not_applicable", "robustness"]
