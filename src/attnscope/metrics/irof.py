"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020): remove superpixels in order of their
mean relevance and measure the area over the curve of the model's relative score.

Superpixels come from scikit-image's SLIC (Achanta et al. 2012) with its defaults, one call per
image on the CPU (it is a data-preparation step); everything after is batched on the images'
device through `attnscope.metrics.faithfulness.curve`.
"""

from __future__ import annotations

import numpy as np
import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_images, scored
from attnscope.metrics.declare import declare
from attnscope.metrics.faithfulness import Scorer, curve, importance_order, scores_of, substrate_of


def slic_segments(images: torch.Tensor, n_segments: int = 100, compactness: float = 10.0) -> torch.Tensor:
    """SLIC superpixels (B, H, W) long of each image, labelled 0 … S_b − 1 (scikit-image's `slic`)."""
    from skimage.segmentation import slic

    check_images(images)
    out = []
    for img in images.detach().double().cpu().numpy():
        labels = slic(np.moveaxis(img, 0, -1), n_segments=n_segments, compactness=compactness, start_label=0,
                      channel_axis=-1)
        out.append(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))
    return torch.from_numpy(np.stack(out)).long().to(images.device)


@scored
def irof_curve(maps: torch.Tensor, images: torch.Tensor, f: Scorer, segments: torch.Tensor | None = None,
               substrate: str | torch.Tensor = "mean", batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(curve (B, S + 1), counts (B,)): f(x_k) / f(x) after the k segments of highest mean relevance
    are replaced by `substrate`, k = 0 … S_b for image b (S = max_b S_b; an image with fewer segments
    repeats its last point). `segments` (B, H, W) long, default `slic_segments(images)`."""
    check_images(images, maps)
    b, h, w = maps.shape
    segments = slic_segments(images) if segments is None else segments
    if segments.shape != maps.shape or segments.dtype != torch.long or segments.min() < 0:
        raise InputError(f"segments must be non-negative long labels (B, H, W) = {tuple(maps.shape)}, "
                         f"got {segments.dtype} {tuple(segments.shape)}")
    segments = segments.to(maps.device)
    flat = segments.flatten(1)
    n = int(flat.max()) + 1
    size = torch.zeros(b, n, dtype=torch.float64, device=maps.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float64))
    total = torch.zeros_like(size).scatter_add_(1, flat, maps.flatten(1).double())
    present = size > 0
    mean = torch.where(present, total / size.clamp_min(1), torch.full_like(total, -torch.inf))  # absent last
    rank = importance_order(mean).gather(1, flat).view(b, h, w)
    counts = present.sum(1)  # (B,) segments per image
    scores = curve(f, images, substrate_of(substrate, images), rank, range(int(counts.max()) + 1), batch_size)
    base = scores_of(f, images, torch.arange(b, device=images.device)).double().cpu()
    if not (base > 0).all():
        raise InputError("IROF divides by the score of the image: the scorer must give positive scores "
                         "(class probabilities), got a score <= 0")
    return scores / base[:, None], counts.cpu()


@declare("irof", "faithfulness", lambda m, b: irof(m, b.images, b.scorer, b.once("segments", lambda: slic_segments(
    b.images)), "mean", b.batch_size),
         default=False, model=True, short="irof", legend="IROF", bounds=(0, 1))
@scored
def irof(maps: torch.Tensor, images: torch.Tensor, f: Scorer, segments: torch.Tensor | None = None,
         substrate: str | torch.Tensor = "mean", batch_size: int = 256) -> torch.Tensor:
    """IROF (Rieger & Hansen 2020): area over the relative-score curve `irof_curve`, over the fraction
    k / S_b of segments removed (trapezoid rule), in [0, 1] for scores that only fall. Higher is better. (B,)."""
    rel, counts = irof_curve(maps, images, f, segments, substrate, batch_size)
    out = torch.empty(rel.shape[0], dtype=torch.float64)
    for i, s in enumerate(counts.tolist()):
        c = rel[i, : s + 1]
        out[i] = 1 - (c.sum() - c[0] / 2 - c[-1] / 2) / s
    return out
