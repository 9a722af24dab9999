"""Localisation of a map against ground truth (boxes `(x0, y0, x1, y1)`, x1/y1 exclusive, or masks).

Pure tensor functions over (B, H, W) maps; each returns one value per image.
"""

from __future__ import annotations

import torch


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean masks (B, H, W) of boxes (B, 4)."""
    h, w = size
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016): 1 where the map's maximum lies within `tolerance` px of the box.

    The maximum is the first arg-max in raster order. Returns (B,) float of 0/1.
    """
    b, h, w = maps.shape
    idx = maps.flatten(1).argmax(dim=1)
    y, x = (idx // w).float() + 0.5, (idx % w).float() + 0.5  # pixel centres
    bx = boxes.float()
    dx = torch.clamp(torch.maximum(bx[:, 0] - x, x - bx[:, 2]), min=0)
    dy = torch.clamp(torch.maximum(bx[:, 1] - y, y - bx[:, 3]), min=0)
    return ((dx**2 + dy**2).sqrt() <= tolerance).float()


def energy_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., CVPR-W 2020, Score-CAM): Σ_box M⁺ / Σ M⁺, M⁺ = max(M, 0).

    An all-non-positive map scores 0. Returns (B,) float.
    """
    pos = maps.clamp_min(0)
    inside = (pos * box_masks(boxes, maps.shape[-2:])).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(pos.dtype).tiny), torch.zeros_like(total))
