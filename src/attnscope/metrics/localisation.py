"""Localisation of a map against ground truth: boxes `(x0, y0, x1, y1)` (x1/y1 exclusive) or masks.

Pure tensor functions over (B, H, W) maps (tensors or `AttentionMap`s); each returns one value per image.
Ground truth is a LongTensor of boxes (B, 4) or a bool tensor of masks (B, H, W) wherever a function says
"truth". Each leaderboard column is declared beside its function (`declare`).
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.maps import normalize
from attnscope.metrics.checks import check_maps, check_masks, takes_maps
from attnscope.metrics.declare import declare
from attnscope.metrics.faithfulness import importance_order
from attnscope.metrics.similarity import rank


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean masks (B, H, W) of boxes (B, 4)."""
    h, w = size
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


def truth_masks(maps: torch.Tensor, truth: torch.Tensor, full_ok: bool = True) -> torch.Tensor:
    """Ground truth as bool masks (B, H, W) matching `maps`: boxes (B, 4) are drawn, masks checked.
    An empty ground truth (and, unless `full_ok`, one covering every pixel) raises InputError."""
    check_maps(maps)
    b, h, w = maps.shape
    if not isinstance(truth, torch.Tensor):
        raise InputError(f"ground truth must be boxes (B, 4) or bool masks (B, H, W), got {type(truth).__name__}")
    if truth.dim() == 2 and truth.shape == (b, 4) and truth.dtype != torch.bool and not truth.is_floating_point():
        return check_masks(box_masks(truth.to(maps.device), (h, w)), maps, full_ok)
    if truth.dim() == 3 and truth.shape == (b, h, w) and truth.dtype == torch.bool:
        return check_masks(truth, maps, full_ok)
    raise InputError(
        f"ground truth must be boxes (B, 4) or bool masks (B, H, W) = ({b}, {h}, {w}), "
        f"got {truth.dtype} {tuple(truth.shape)}"
    )


@declare("pointing", "localisation", lambda m, b: pointing_game(m, b.boxes, b.tolerance), needs="boxes",
         short="point", legend="pointing game", bounds=(0, 1))
@takes_maps
def pointing_game(maps: torch.Tensor, truth: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016): 1 where the map's maximum lies within `tolerance` px of the truth.

    A hit: some ground-truth pixel q has ‖p − q‖ ≤ tolerance, distances between pixel centres, p the
    first arg-max in raster order. tolerance=0 asks for p inside the truth; the paper uses 15 px.
    (TorchRay tests ‖p − q‖ < tolerance, which differs only at exactly `tolerance` px.) A constant map
    points nowhere and scores 0. Returns (B,) 0/1.
    """
    masks = truth_masks(maps, truth)
    if not tolerance >= 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    b, h, w = maps.shape
    idx = maps.flatten(1).argmax(dim=1)  # (B,)
    py, px = (idx // w).float(), (idx % w).float()
    ys = torch.arange(h, device=maps.device, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, device=maps.device, dtype=torch.float32)[None, None, :]
    dist2 = (ys - py[:, None, None]) ** 2 + (xs - px[:, None, None]) ** 2  # (B, H, W)
    hit = ((dist2 <= float(tolerance) ** 2) & masks).flatten(1).any(1)
    flat = maps.flatten(1).amax(1) == maps.flatten(1).amin(1)  # (B,) no maximum to point with
    return (hit & ~flat).float()


@takes_maps
def relevance_mass(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al., Information Fusion 2022): Σ_truth M⁺ / Σ M⁺, M⁺ = max(M, 0).

    On boxes this is the energy-based pointing game of Score-CAM. A map with no positive value
    scores 0. Returns (B,).
    """
    masks = truth_masks(maps, truth)
    pos = maps.double().clamp_min(0)
    inside = (pos * masks).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(pos.dtype).tiny), torch.zeros_like(total))


@declare("energy_box", "localisation", short="energy", legend="energy in box", bounds=(0, 1))
@takes_maps
def energy_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., CVPR-W 2020, Score-CAM): Σ_box M⁺ / Σ M⁺, M⁺ = max(M, 0).

    An all-non-positive map scores 0. Returns (B,).
    """
    return relevance_mass(maps, boxes).float()


# On the min–max normalised map: a map on a large floor (rollout) counts it everywhere.
declare("energy_box_norm", "localisation", lambda m, b: energy_in_box(normalize(m), b.boxes), needs="boxes",
        short="energyN", legend="energy in box of the min-max normalised map", default=False,
        bounds=(0, 1))(energy_in_box)
declare("mass_mask", "localisation", lambda m, b: relevance_mass(m, b.masks), needs="masks", short="mass",
        legend="relevance mass in mask", bounds=(0, 1))(relevance_mass)


@declare("rank_mask", "localisation", lambda m, b: relevance_rank(m, b.masks), needs="masks", short="rank",
         legend="relevance rank in mask", bounds=(0, 1))
@takes_maps
def relevance_rank(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al., Information Fusion 2022): |top-K(M) ∩ truth| / K, K = |truth|.

    Ties at the K-th value are broken in raster order (earlier pixels first). Returns (B,).
    """
    masks = truth_masks(maps, truth)
    k = masks.flatten(1).sum(1)  # (B,)
    return _top_hits(maps, masks, k[:, None]) / k.double()


@declare("top_k_mask", "localisation", lambda m, b: top_k_intersection(m, b.masks, b.top_k), needs="masks",
         short="topk", legend="top-k intersection with mask", bounds=(0, 1))
@takes_maps
def top_k_intersection(maps: torch.Tensor, truth: torch.Tensor, k: int = 1000) -> torch.Tensor:
    """Top-k intersection (Theiner et al., 2021): |top-k(M) ∩ truth| / k, the k highest pixels of
    the map (ties in raster order). Returns (B,)."""
    masks = truth_masks(maps, truth)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= masks[0].numel():
        raise InputError(f"k must be an integer in [1, {masks[0].numel()}] (pixels of a map), got {k!r}")
    return _top_hits(maps, masks, torch.tensor([[k]], device=maps.device)) / k


@declare("auc_mask", "localisation", lambda m, b: roc_auc(m, b.masks), needs="masks", short="auc",
         legend="ROC AUC against mask", bounds=(0, 1))
@takes_maps
def roc_auc(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of the map's values as a pixel classifier of the truth (Fawcett 2006):
    P(M_p > M_q) + ½ P(M_p = M_q) for p inside, q outside (Mann–Whitney with average ranks on ties,
    as scikit-learn's `roc_auc_score`). The truth must neither be empty nor cover every pixel. (B,)."""
    masks = truth_masks(maps, truth, full_ok=False).flatten(1)
    ranks = rank(maps.flatten(1).double())
    pos = masks.sum(1).double()
    neg = masks.shape[1] - pos
    return ((ranks * masks).sum(1) - pos * (pos + 1) / 2) / (pos * neg)


@declare("focus", "localisation", needs="mosaics", per_method=False, default=False, legend="focus on mosaics",
         bounds=(0, 1))
@takes_maps
def focus(maps: torch.Tensor, quadrants: torch.Tensor) -> torch.Tensor:
    """Focus (Arias-Duart et al., 2022) on 2×2 mosaics: Σ_{target quadrants} M⁺ / Σ M⁺, `quadrants`
    (B, 4) bool marking the quadrants (top-left, top-right, bottom-left, bottom-right) whose tile shows
    the explained class. A map without positive mass scores 0. (B,)."""
    check_maps(maps)
    b, h, w = maps.shape
    if not isinstance(quadrants, torch.Tensor) or quadrants.shape != (b, 4) or quadrants.dtype != torch.bool:
        raise InputError(f"quadrants must be bool (B, 4) = ({b}, 4), got {getattr(quadrants, 'dtype', '')} "
                         f"{tuple(getattr(quadrants, 'shape', ()))}")
    if not quadrants.any(1).all():
        raise InputError("every mosaic needs at least one quadrant of the explained class")
    top, left = torch.arange(h, device=maps.device)[:, None] < h // 2, torch.arange(w, device=maps.device) < w // 2
    tiles = torch.stack([top & left, top & ~left, ~top & left, ~top & ~left])  # (4, H, W)
    masks = (quadrants.to(maps.device).double() @ tiles.flatten(1).double()).view(b, h, w) > 0
    return relevance_mass(maps, masks)


def _top_hits(maps: torch.Tensor, masks: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pixels of `masks` among the k (B, 1) highest of each map (ties in raster order), as float64 (B,)."""
    return ((importance_order(maps) < k) & masks.flatten(1)).sum(1).double()
