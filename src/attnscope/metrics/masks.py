"""Agreement of a binarised map with a ground-truth mask (Jaccard index, as in object discovery).

Pure tensor functions over (B, H, W) maps and boolean masks; each returns one value per image.
"""

from __future__ import annotations

import torch


def jaccard(maps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Jaccard index |M ∩ G| / |M ∪ G| of the binarised map M = (map ≥ threshold) and the mask G.

    Binarise normalised maps (e.g. `AttentionMap.normalized()`) for a threshold in [0, 1] to mean a
    share of each map's range. Two empty sets agree perfectly (1.0). Returns (B,) float.
    """
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must both be (B, H, W)")
    binary, truth = maps >= threshold, masks.bool()
    inter = (binary & truth).flatten(1).sum(1).float()
    union = (binary | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
