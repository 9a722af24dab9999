"""Metrics: pure tensor functions over attention maps and ground truth."""

from __future__ import annotations

from attnscope.metrics.captions import corpus_bleu, grounding
from attnscope.metrics.concentration import entropy
from attnscope.metrics.faithfulness import (
    average_drop,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    masked_scores,
)
from attnscope.metrics.localisation import box_masks, energy_in_box, pointing_game, relevance_mass, relevance_rank
from attnscope.metrics.masks import jaccard
from attnscope.metrics.similarity import SIMILARITIES, mean_ci, similarities, spearman

__all__ = [
    "SIMILARITIES",
    "average_drop",
    "box_masks",
    "corpus_bleu",
    "deletion_auc",
    "deletion_curve",
    "energy_in_box",
    "entropy",
    "grounding",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_curve",
    "jaccard",
    "masked_scores",
    "mean_ci",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "similarities",
    "spearman",
]
