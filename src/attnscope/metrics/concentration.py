"""How concentrated a map is: the normalised entropy of its positive mass. One value per image.

The tracker measures it by default; the leaderboard has it as a column of the complexity group (not shown by
default).
"""

from __future__ import annotations

import math

import torch

from attnscope.metrics.checks import check_maps, takes_maps
from attnscope.metrics.declare import declare


@declare("entropy", "complexity", higher_is_better=False, default=False, short="entropy",
         legend="normalised entropy of the positive mass", bounds=(0, 1))
@takes_maps
def entropy(maps: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the positive mass of (B, H, W) maps: H(p) / log(HW), p = M⁺ / Σ M⁺, in [0, 1].

    0: all mass on one pixel; 1: spread evenly. A map without positive mass counts as spread
    evenly (1), since it prefers no pixel. Returns (B,) float.
    """
    pos = check_maps(maps).flatten(1).double().clamp_min(0)  # (B, N)
    total = pos.sum(1, keepdim=True)
    p = pos / total.clamp_min(1e-300)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1) / math.log(max(pos.shape[1], 2))
    return torch.where(total[:, 0] > 0, h, torch.ones_like(h)).float()
