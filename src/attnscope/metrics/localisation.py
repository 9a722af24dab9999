"""Localisation of a map against ground truth: boxes `(x0, y0, x1, y1)` (x1/y1 exclusive) or masks.

Pure tensor functions over (B, H, W) maps; each returns one value per image. Ground truth is a
LongTensor of boxes (B, 4) or a bool tensor of masks (B, H, W) wherever a function says "truth".
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean masks (B, H, W) of boxes (B, 4)."""
    h, w = size
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


def truth_masks(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Ground truth as bool masks (B, H, W) matching `maps`: boxes (B, 4) are drawn, masks checked."""
    _check_maps(maps)
    b, h, w = maps.shape
    if truth.dim() == 2 and truth.shape == (b, 4) and truth.dtype != torch.bool:
        return box_masks(truth.to(maps.device), (h, w))
    if truth.dim() == 3 and truth.shape == (b, h, w) and truth.dtype == torch.bool:
        return truth.to(maps.device)
    raise InputError(
        f"ground truth must be boxes (B, 4) or bool masks (B, H, W) = ({b}, {h}, {w}), "
        f"got {truth.dtype} {tuple(truth.shape)}"
    )


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


def energy_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., CVPR-W 2020, Score-CAM): Σ_box M⁺ / Σ M⁺, M⁺ = max(M, 0).

    An all-non-positive map scores 0. Returns (B,).
    """
    return relevance_mass(maps, boxes).float()


def relevance_rank(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al., Information Fusion 2022): |top-K(M) ∩ truth| / K, K = |truth|.

    Ties at the K-th value are broken in raster order (earlier pixels first). An empty truth gives
    NaN (the metric is undefined). Returns (B,).
    """
    masks = truth_masks(maps, truth)
    flat, gt = maps.flatten(1), masks.flatten(1)
    k = gt.sum(1)  # (B,)
    order = (-flat).argsort(dim=1, stable=True)
    ranks = torch.arange(flat.shape[1], device=maps.device).expand_as(order)
    position = torch.empty_like(order).scatter_(1, order, ranks)  # (B, N) 0 = highest value
    hits = ((position < k[:, None]) & gt).sum(1).double()
    return torch.where(k > 0, hits / k.clamp_min(1), torch.full_like(hits, float("nan")))


def _check_maps(maps: torch.Tensor) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise InputError(f"maps must be a tensor (B, H, W), got {shape}")
    if not torch.isfinite(maps).all():
        raise InputError("maps contain NaN or infinite values")
