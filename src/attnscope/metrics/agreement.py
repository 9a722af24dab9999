"""How maps relate to each other and how spread out they are: rank correlation and entropy.

Pure tensor functions over (B, H, W) maps; each returns one value per image.
"""

from __future__ import annotations

import math

import torch


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dim of (B, N): 0-based, tied values share the mean of their positions."""
    ordered, order = values.sort(dim=-1)  # (B, N)
    n = ordered.shape[-1]
    pos = torch.arange(n, device=values.device).expand_as(ordered)
    first = torch.ones_like(ordered, dtype=torch.bool)  # first of its run of equal values
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(-1).values
    end = torch.where(last, pos, torch.full_like(pos, n)).flip(-1).cummin(-1).values.flip(-1)
    return torch.empty(ordered.shape, dtype=torch.float64, device=values.device).scatter_(
        -1, order, (start + end).double() / 2)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of (B, N) tensors; 0 where a row is constant. Returns (B,) float."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    denom = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ between two maps per image: the Pearson correlation of their average ranks.

    ρ = cov(rank a, rank b) / (σ_rank a · σ_rank b), ties ranked by their mean position (as
    scipy.stats.spearmanr). A constant map has no ranking; ρ is 0 there. Returns (B,) float.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"rank_correlation needs two (B, H, W) maps of one shape, "
                         f"got {tuple(a.shape)}, {tuple(b.shape)}")
    return correlation(ranks(a.flatten(1)), ranks(b.flatten(1)))


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the positive mass: H(p) / log(HW), p = M⁺ / Σ M⁺, in [0, 1].

    0: all mass on one pixel; 1: spread evenly. A map without positive mass counts as spread
    evenly (1), since it prefers no pixel. Returns (B,) float.
    """
    pos = maps.flatten(1).double().clamp_min(0)  # (B, N)
    total = pos.sum(1, keepdim=True)
    p = pos / total.clamp_min(1e-300)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1) / math.log(max(pos.shape[1], 2))
    return torch.where(total[:, 0] > 0, h, torch.ones_like(h)).float()
