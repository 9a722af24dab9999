"""Metrics: pure tensor functions over attention maps and ground truth, one value per image.

Families (each module's docstring has the papers and formulas): localisation (`localisation`,
`masks`), faithfulness (`faithfulness`, `perturbations`, `road`, `irof`), robustness
(`robustness`), complexity (`complexity`, `concentration`), map similarity (`similarity`) and
captions (`captions`). Every metric takes the maps first — `metric(maps, truth)`, `metric(maps, images, f)` —
as a tensor or an `AttentionMap`, and refuses NaN maps, maps of several targets (B, K, H, W), mismatched
shapes and empty masks with `attnscope.errors.InputError` (`checks`).

Each metric that gives one value per image declares its column beside its function (`declare`): name,
group, direction, the ground truth it needs, the short name and legend of the tables. `METRICS` holds them;
`ats.list("metrics", "*energy*")` lists them; `bench`, the tracker and the report read them.
"""

from __future__ import annotations

from attnscope.metrics import causal  # noqa: F401  (declares blankout_rho)
from attnscope.metrics.captions import corpus_bleu, grounding
from attnscope.metrics.complexity import complexity, effective_complexity, sparseness
from attnscope.metrics.concentration import entropy
from attnscope.metrics.declare import GROUPS, METRICS, Batch, Metric, declare
from attnscope.metrics.faithfulness import (
    aopc,
    auc,
    average_drop,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    masked_scores,
    monotonicity,
    pixel_flipping,
    region_perturbation,
)
from attnscope.metrics.irof import irof, irof_curve, slic_segments
from attnscope.metrics.localisation import (
    box_masks,
    energy_in_box,
    focus,
    pointing_game,
    relevance_mass,
    relevance_rank,
    roc_auc,
    top_k_intersection,
)
from attnscope.metrics.masks import average_precision, binarise, jaccard, mean_iou, pixel_accuracy
from attnscope.metrics.perturbations import faithfulness_correlation, infidelity
from attnscope.metrics.road import road_auc, road_curve
from attnscope.metrics.robustness import (
    avg_sensitivity,
    local_lipschitz,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
)
from attnscope.metrics.similarity import SIMILARITIES, mean_ci, similarities, spearman

__all__ = [
    "GROUPS",
    "METRICS",
    "SIMILARITIES",
    "Batch",
    "Metric",
    "aopc",
    "auc",
    "average_drop",
    "average_precision",
    "avg_sensitivity",
    "binarise",
    "box_masks",
    "complexity",
    "corpus_bleu",
    "declare",
    "deletion_auc",
    "deletion_curve",
    "effective_complexity",
    "energy_in_box",
    "entropy",
    "faithfulness_correlation",
    "focus",
    "grounding",
    "increase_in_confidence",
    "infidelity",
    "insertion_auc",
    "insertion_curve",
    "irof",
    "irof_curve",
    "jaccard",
    "local_lipschitz",
    "masked_scores",
    "max_sensitivity",
    "mean_ci",
    "mean_iou",
    "monotonicity",
    "pixel_accuracy",
    "pixel_flipping",
    "pointing_game",
    "region_perturbation",
    "relative_input_stability",
    "relative_output_stability",
    "relevance_mass",
    "relevance_rank",
    "road_auc",
    "road_curve",
    "roc_auc",
    "similarities",
    "slic_segments",
    "sparseness",
    "spearman",
    "top_k_intersection",
]
