"""How complex a map is: a few pixels carrying all the mass (simple) or mass spread everywhere.

Pure functions of (B, H, W) maps on their absolute values |M| (each returns one value per image).
`attnscope.metrics.entropy` (normalised entropy of the positive mass) is the tracker's measure of
the same kind; `complexity` below is Bhatt et al.'s unnormalised one.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_maps


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Sparseness (Chalasani et al., ICML 2020): the Gini index of |M|,
    G = Σ_i (2i − n − 1) a_(i) / (n Σ_i a_i), a_(1) ≤ … ≤ a_(n) sorted; 0 for a constant map (and an
    all-zero one), → 1 when one pixel holds everything. Higher is simpler. (B,)."""
    a = check_maps(maps).flatten(1).abs().double().sort(dim=1).values  # (B, n)
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    total = a.sum(1)
    g = ((2 * i - n - 1) * a).sum(1) / (n * total.clamp_min(1e-300))
    return torch.where(total > 0, g, torch.zeros_like(g))


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Complexity (Bhatt et al., IJCAI 2020): entropy −Σ_i P_i ln P_i of the fractional contribution
    P_i = |M_i| / Σ_j |M_j|, in nats, in [0, ln n]; an all-zero map counts as spread evenly (ln n).
    Lower is simpler. (B,)."""
    a = check_maps(maps).flatten(1).abs().double()
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float(torch.log(torch.tensor(float(a.shape[1]))))))


def effective_complexity(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Effective complexity (Nguyen & Martínez 2020): the number of pixels with |M| / max|M| > eps,
    the map scaled per image (an all-zero map has none). Lower is simpler. (B,) float."""
    if not eps >= 0:
        raise InputError(f"eps must be >= 0, got {eps!r}")
    a = check_maps(maps).flatten(1).abs().double()
    top = a.amax(1, keepdim=True)
    return ((a / top.clamp_min(1e-300) > eps) & (top > 0)).sum(1).double()
