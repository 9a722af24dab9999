"""What the tracker measures on each snapshot of maps: one flat dict of means over the probe images.

Keys (every value the mean over the probe's P images):

    probe_acc                   share of probe images the model classifies correctly
    {map}/pointing@{region}     pointing game against the region's boxes (Zhang et al. 2016); a flat
                                map has no maximum and points nowhere (0)
    {map}/energy@{region}       share of positive map mass inside the region's boxes
    {map}/entropy               normalised entropy of the positive mass (0 peaked … 1 flat)
    {map}/change                1 − Spearman ρ against the same map at the previous epoch's end
    agreement/{a}~{b}           Spearman ρ between two maps of the same snapshot

Spearman ρ (average ranks for ties) is undefined where a map is constant; those images are left
out of the mean, and a mean over no image is None.

Regions are the probe's named boxes: "box" (the object), "decoy" (a shortcut patch) when present.
All measures are taken on the maps as the store holds them (float16), so they can be recomputed
from the store alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations

import torch

from attnscope.metrics import energy_in_box, entropy, pointing_game
from attnscope.metrics.similarity import pearson, rank
from attnscope.track.store import Probe


def rank_maps(maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average ranks (P, H·W) of each map's pixels, the input of every Spearman ρ below."""
    return {k: rank(v.flatten(1)) for k, v in maps.items()}


def measure(
    maps: Mapping[str, torch.Tensor],
    probe: Probe,
    predictions: torch.Tensor,
    previous: Mapping[str, torch.Tensor] | None = None,
    ranked: Mapping[str, torch.Tensor] | None = None,
    previous_ranked: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float | None]:
    """The measures of one snapshot: `maps` (P, H, W) per key and `previous`, both as stored.

    `ranked` / `previous_ranked`: `rank_maps` of either, when the caller already has them.
    """
    out: dict[str, float | None] = {"probe_acc": _mean((predictions.cpu() == probe.labels.cpu()).float())}
    ranked = rank_maps(maps) if ranked is None else ranked
    if previous is not None and previous_ranked is None:
        previous_ranked = rank_maps(previous)
    for key, values in maps.items():
        flat = values.flatten(1)
        peaked = (flat.amax(1) > flat.amin(1)).float()  # (P,) a flat map's "arg-max" is just pixel (0, 0)
        for region, boxes in probe.regions.items():
            out[f"{key}/pointing@{region}"] = _mean(pointing_game(values, boxes) * peaked)
            out[f"{key}/energy@{region}"] = _mean(energy_in_box(values, boxes))
        out[f"{key}/entropy"] = _mean(entropy(values))
        if previous_ranked is not None and key in previous_ranked:
            out[f"{key}/change"] = _mean(1 - pearson(previous_ranked[key], ranked[key]))
    for a, b in combinations(maps, 2):
        out[f"agreement/{a}~{b}"] = _mean(pearson(ranked[a], ranked[b]))
    return out


def _mean(values: torch.Tensor) -> float | None:
    """Mean over the images where the value is defined (not NaN); None if it is defined nowhere."""
    m = float(values.double().nanmean())
    return round(m, 6) if math.isfinite(m) else None
