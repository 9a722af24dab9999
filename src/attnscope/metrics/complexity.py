"""How complex a map is: a few pixels carrying all the mass (simple) or mass spread everywhere.

Pure functions of (B, H, W) maps on their absolute values |M| (each returns one value per image).
`attnscope.metrics.entropy` (normalised entropy of the positive mass) is the tracker's measure of
the same kind; `complexity` below is Bhatt et al.'s unnormalised one.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_maps, takes_maps
from attnscope.metrics.declare import declare


@declare("sparseness", "complexity", short="sparse", legend="sparseness (Gini)", bounds=(0, 1))
@takes_maps
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


@declare("complexity", "complexity", higher_is_better=False, short="complexity", legend="complexity")
@takes_maps
def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Complexity (Bhatt et al., IJCAI 2020): entropy −Σ_i P_i ln P_i of the fractional contribution
    P_i = |M_i| / Σ_j |M_j|, in nats, in [0, ln n]; an all-zero map counts as spread evenly (ln n).
    Lower is simpler. (B,)."""
    a = check_maps(maps).flatten(1).abs().double()
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float(torch.log(torch.tensor(float(a.shape[1]))))))


@declare("effective_complexity", "complexity", higher_is_better=False, short="effcx",
         legend="effective complexity")
@takes_maps
def effective_complexity(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Effective complexity (Nguyen & Martínez 2020): the number of pixels with |M| / max|M| > eps,
    the map scaled per image (an all-zero map has none). Lower is simpler. (B,) float."""
    if not eps >= 0:
        raise InputError(f"eps must be >= 0, got {eps!r}")
    a = check_maps(maps).flatten(1).abs().double()
    top = a.amax(1, keepdim=True)
    return ((a / top.clamp_min(1e-300) > eps) & (top > 0)).sum(1).double()


@takes_maps
def histogram_entropy(maps: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Discrete entropy −Σ_k p_k ln p_k of the histogram of each map's values in `bins` equal bins
    between its minimum and maximum (numpy's `histogram` edges; a constant map fills one bin: 0):
    the complexity eMPRT compares (Hedström et al. 2023). In nats. (B,)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    v = check_maps(maps).flatten(1).double()
    lo, hi = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)  # numpy's range for a constant
    step = (hi - lo) / bins
    idx = ((v - lo) / step).floor().long().clamp(0, bins - 1)
    k = torch.arange(bins + 1, device=v.device, dtype=torch.float64)
    edges = torch.where(k == bins, hi, lo + k * step)  # (B, bins + 1), last edge exactly the maximum
    idx = idx - (v < edges.gather(1, idx)).long()  # numpy's corrections at the edges
    idx = idx + ((v >= edges.gather(1, idx + 1)) & (idx != bins - 1)).long()
    counts = torch.zeros(v.shape[0], bins, dtype=torch.float64, device=v.device).scatter_add_(
        1, idx, torch.ones_like(v))
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
