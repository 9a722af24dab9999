"""What the tracker measures on each snapshot of maps: one flat dict of means over the probe images.

Keys (every value the mean over the probe's P images):

    probe_acc                   share of probe images the model classifies correctly
    {map}/{metric}@{region}     each of the tracker's `measures` that needs boxes, against the region's boxes
    {map}/{metric}              each of the other `measures` (of the map alone)
    {map}/change                1 − Spearman ρ against the same map at the previous epoch's end
    agreement/{a}~{b}           Spearman ρ between two maps of the same snapshot

The measures are metrics declared in `attnscope.metrics` (`metrics.declare`), by name; by default the pointing
game (a flat map points nowhere: 0), the energy in the box and the normalised entropy of the positive mass
(`DEFAULT`). Any declared metric that reads only the map and boxes can be tracked, and those that ask the model
(faithfulness: `blankout_rho`, `deletion_zero`, ...) when the tracker gives a scorer — those are taken on the
model at the snapshot and cannot be recomputed from the store's maps; metrics that need masks or mosaics cannot.

Spearman ρ (average ranks for ties) is undefined where a map is constant; those images are left
out of the mean, and a mean over no image is None.

Regions are the probe's named boxes: "box" (the object), "decoy" (a shortcut patch) when present.
All measures are taken on the maps as the store holds them (float16), so they can be recomputed
from the store alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

import attnscope.metrics  # noqa: F401  (every family's declarations)
from attnscope.errors import InputError
from attnscope.metrics.declare import METRICS, Batch, Scorer
from attnscope.metrics.similarity import pearson, rank
from attnscope.track.store import Probe

DEFAULT = ("pointing", "energy_box", "entropy")


def trackable(name: str) -> str | None:
    """Why the declared metric `name` cannot be tracked, or None if it can (`UnknownNameError` if undeclared)."""
    metric = METRICS.get(name)
    if not metric.per_method:
        return "it is computed from maps of other images (perturbed copies, mosaics)"
    if metric.needs not in ("", "boxes"):
        return f"it needs {metric.needs}, and a probe has boxes only"
    return None


def checked_measures(measures: str | Sequence[str]) -> list[str]:
    """The tracker's measures as a list of declared metric names, each one it can compute (else InputError)."""
    names = [measures] if isinstance(measures, str) else list(measures)
    if len(set(names)) != len(names):
        raise InputError(f"measures repeat a name: {names}")
    for name in names:
        reason = trackable(name)
        if reason is not None:
            usable = [n for n in METRICS if trackable(n) is None]
            raise InputError(f"the tracker cannot measure {name!r}: {reason}. Trackable: {', '.join(usable)}")
    return names


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
    measures: Sequence[str] = DEFAULT,
    scorer: Scorer | None = None,
) -> dict[str, float | None]:
    """The measures of one snapshot: `maps` (P, H, W) per key and `previous`, both as stored.

    `ranked` / `previous_ranked`: `rank_maps` of either, when the caller already has them. `measures`:
    declared metric names (`checked_measures`). `scorer`: `f(x, source)` of the model for the measures that ask it.
    """
    asking = [n for n in measures if METRICS.get(n).model]
    if asking and scorer is None:
        raise InputError(f"measures {asking} ask the model: give a scorer (the tracker does)")
    out: dict[str, float | None] = {"probe_acc": _mean((predictions.cpu() == probe.labels.cpu()).float())}
    ranked = rank_maps(maps) if ranked is None else ranked
    if previous is not None and previous_ranked is None:
        previous_ranked = rank_maps(previous)
    batch = Batch(probe.images, probe.labels, scorer=scorer)
    for key, values in maps.items():
        for name in measures:
            metric = METRICS.get(name)
            if metric.needs == "boxes":
                for region, boxes in probe.regions.items():
                    out[f"{key}/{name}@{region}"] = _mean(metric.values(values, Batch(
                        probe.images, probe.labels, scorer=scorer, boxes=boxes)))
            else:
                out[f"{key}/{name}"] = _mean(metric.values(values, batch))
        if previous_ranked is not None and key in previous_ranked:
            out[f"{key}/change"] = _mean(1 - pearson(previous_ranked[key], ranked[key]))
    for a, b in combinations(maps, 2):
        out[f"agreement/{a}~{b}"] = _mean(pearson(ranked[a], ranked[b]))
    return out


def _mean(values: torch.Tensor) -> float | None:
    """Mean over the images where the value is defined (not NaN); None if it is defined nowhere."""
    m = float(values.double().nanmean())
    return round(m, 6) if math.isfinite(m) else None
