"""Agreement of a map with a ground-truth mask, as segmentation benchmarks score it: the Jaccard index
of object discovery, and the pixel accuracy, mean IoU and average precision that Chefer et al.
(CVPR 2021) report on ImageNet-segmentation (after Nam et al.; the map binarised at its mean).

Pure tensor functions over (B, H, W) maps and boolean masks; each returns one value per image.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.maps import normalize
from attnscope.metrics.checks import check_maps, check_masks, takes_maps
from attnscope.metrics.declare import declare


@takes_maps
def jaccard(maps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Jaccard index |M ∩ G| / |M ∪ G| of the binarised map M = (map ≥ threshold) and the mask G.

    Binarise normalised maps (e.g. `AttentionMap.normalized()`) for a threshold in [0, 1] to mean a
    share of each map's range. Two empty sets agree perfectly (1.0). Returns (B,) float.
    """
    check_maps(maps)
    if not isinstance(masks, torch.Tensor) or masks.shape != maps.shape:
        shape = tuple(getattr(masks, "shape", ()))
        raise InputError(f"maps {tuple(maps.shape)} and masks {shape} must both be (B, H, W)")
    binary, truth = maps >= threshold, masks.bool().to(maps.device)
    inter = (binary & truth).flatten(1).sum(1).float()
    union = (binary | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@takes_maps
def binarise(maps: torch.Tensor, threshold: float | str = "mean") -> torch.Tensor:
    """The foreground of each map (B, H, W) bool: min–max normalised, then > its mean ("mean",
    Chefer et al.'s rule) or ≥ a fixed `threshold` in [0, 1]."""
    m = normalize(check_maps(maps))
    if threshold == "mean":
        return m > m.flatten(1).mean(1)[:, None, None]
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold <= 1:
        return m >= threshold
    raise InputError(f"threshold must be 'mean' or a number in [0, 1], got {threshold!r}")


@declare("iou_mask", "localisation", lambda m, b: mean_iou(m, b.masks), needs="masks", short="iou",
         legend="mean IoU with mask", bounds=(0, 1))
@takes_maps
def mean_iou(maps: torch.Tensor, masks: torch.Tensor, threshold: float | str = "mean") -> torch.Tensor:
    """Mean over foreground and background of |A ∩ G| / |A ∪ G| for the binarised map. (B,)."""
    fg, truth = binarise(maps, threshold), check_masks(masks, maps)
    out = torch.zeros(maps.shape[0], dtype=torch.float64, device=maps.device)
    for a, g in ((fg, truth), (~fg, ~truth)):
        inter = (a & g).flatten(1).sum(1).double()
        union = (a | g).flatten(1).sum(1).double()
        out += torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)) / 2
    return out


@declare("pixel_acc_mask", "localisation", lambda m, b: pixel_accuracy(m, b.masks), needs="masks",
         short="pxacc", legend="pixel accuracy against mask", bounds=(0, 1))
@takes_maps
def pixel_accuracy(maps: torch.Tensor, masks: torch.Tensor, threshold: float | str = "mean") -> torch.Tensor:
    """Share of pixels where the binarised map (`binarise`) equals the mask. (B,)."""
    fg = binarise(maps, threshold)
    return (fg == check_masks(masks, maps)).flatten(1).double().mean(1)


@declare("ap_mask", "localisation", lambda m, b: average_precision(m, b.masks), needs="masks", short="ap",
         legend="average precision against mask", bounds=(0, 1))
@takes_maps
def average_precision(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average precision of the map's values ranking the mask's pixels first: Σ_t (R_t − R_{t−1}) P_t
    over the distinct values t as thresholds (scikit-learn's `average_precision_score`; tied pixels
    enter together). (B,)."""
    truth = check_masks(masks, check_maps(maps)).flatten(1)
    values, order = maps.flatten(1).double().sort(dim=1, descending=True, stable=True)
    hits = truth.gather(1, order).double()
    tp = hits.cumsum(1)
    last = torch.ones_like(hits, dtype=torch.bool)
    last[:, :-1] = values[:, 1:] != values[:, :-1]  # the last pixel of each run of equal values
    seen = torch.arange(1, hits.shape[1] + 1, device=maps.device, dtype=torch.float64)
    at_end = torch.where(last, tp, torch.zeros_like(tp)).cummax(1).values  # tp at the latest group end
    before = torch.cat([torch.zeros_like(tp[:, :1]), at_end[:, :-1]], 1)
    gained = torch.where(last, tp - before, torch.zeros_like(tp))  # recall gained at each group end (× |G|)
    return (gained * tp / seen).sum(1) / truth.sum(1).double()

