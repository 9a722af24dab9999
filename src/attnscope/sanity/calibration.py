"""Calibration maps for a sanity table: what a map that ignores the model scores.

`random`: i.i.d. uniform noise, a fresh draw at every step — its similarity to the first draw is
the floor (≈ 0) of each metric. `sobel`: the Sobel edge magnitude of the input, the same at every
step — the ceiling (1) that a model-independent, edge-detector-like map reaches (Adebayo et al.
2018, Fig. 1, compare maps to an edge detector). `centre`: a cone peaking at the image centre, the
centre-bias baseline of localisation metrics on photos, whose objects are often in the middle.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnscope.registry import Registry

CALIBRATIONS: Registry[Callable[..., torch.Tensor]] = Registry("calibration map")  # (images, draw, seed, index)


@CALIBRATIONS.register("random")
def random_map(images: torch.Tensor, draw: int | torch.Tensor, seed: int = 0,
               index: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform noise (B, H, W): image r's draw number `draw` (one int, or one per image) from its own
    generator, seeded by `seed` and its data-set index `index[r]` (default r; `attnscope.draws`)."""
    from attnscope import draws

    b, _, h, w = images.shape
    rows = draws.indices(index, b)
    noise = draws.per_image(lambda g: torch.rand((h, w), generator=g, dtype=torch.float64), seed, rows, draw)
    return noise.reshape(b, h, w).to(images.device)


@CALIBRATIONS.register("sobel")
def sobel_map(images: torch.Tensor, draw: int | torch.Tensor = 0, seed: int = 0, index: object = None) -> torch.Tensor:
    """Sobel gradient magnitude √(G_x² + G_y²) of the channel-mean image (B, H, W), edges replicated."""
    gray = images.double().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=torch.float64, device=images.device)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, k.view(1, 1, 3, 3))
    gy = F.conv2d(padded, k.t().reshape(1, 1, 3, 3))
    return (gx.square() + gy.square()).sqrt()[:, 0]


@CALIBRATIONS.register("centre")
def centre_map(images: torch.Tensor, draw: int | torch.Tensor = 0, seed: int = 0, index: object = None) -> torch.Tensor:
    """1 − d / d_max (B, H, W), d the distance of a pixel to the image centre: it looks at nothing but the middle."""
    b, _, h, w = images.shape
    ys = torch.arange(h, dtype=torch.float64, device=images.device)[:, None] - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64, device=images.device)[None, :] - (w - 1) / 2
    d = (ys**2 + xs**2).sqrt()
    return (1 - d / d.max()).expand(b, h, w).clone()
