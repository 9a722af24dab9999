"""`AttentionMap`, the one result type: for an input batch and a target, a score per pixel.

Trainable, transformer and post-hoc maps all come back as an `AttentionMap`, so any of them can
be compared, tracked, sanity-checked, scored and drawn by the same code. Values stay raw (signed,
unnormalised); normalisation is the explicit step `normalized()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class AttentionMap:
    """Maps for a batch: `values` (B, H, W) raw at the input's resolution.

    `targets` holds the explained class per image (-1 where a callable target was used);
    `lowres` holds the map at the layer's resolution for layer-based methods (CAMs);
    `meta` holds method options and anything method-specific (e.g. the estimator of an LTPA map).
    """

    values: torch.Tensor  # (B, H, W) float
    method: str
    targets: torch.Tensor  # (B,) long
    layer: str | None = None
    lowres: torch.Tensor | None = None  # (B, h, w)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.dim() != 3:
            raise ValueError(f"AttentionMap values must be (B, H, W), got {tuple(self.values.shape)}")
        if self.targets.shape != (self.values.shape[0],):
            raise ValueError(f"targets {tuple(self.targets.shape)} do not match batch {self.values.shape[0]}")

    def __len__(self) -> int:
        return self.values.shape[0]

    def normalized(self) -> torch.Tensor:
        """Per-image min–max to [0, 1]; a constant map becomes zeros (never NaN)."""
        return normalize(self.values)

    def select(self, index: int | slice | Sequence[int] | torch.Tensor) -> AttentionMap:
        """The maps of some images of the batch, as an `AttentionMap`."""
        if isinstance(index, int):
            index = [index]
        pick = lambda t: None if t is None else t[index]
        return replace(self, values=pick(self.values), targets=pick(self.targets), lowres=pick(self.lowres))

    def to(self, device: torch.device | str) -> AttentionMap:
        move = lambda t: None if t is None else t.to(device)
        return replace(self, values=move(self.values), targets=move(self.targets), lowres=move(self.lowres))

    def cpu(self) -> AttentionMap:
        return self.to("cpu")

    @staticmethod
    def cat(maps: Sequence[AttentionMap]) -> AttentionMap:
        """Concatenate maps of one method along the batch."""
        first = maps[0]
        low = None if first.lowres is None else torch.cat([m.lowres for m in maps])
        return replace(
            first,
            values=torch.cat([m.values for m in maps]),
            targets=torch.cat([m.targets for m in maps]),
            lowres=low,
        )


def normalize(values: torch.Tensor) -> torch.Tensor:
    """Per-image min–max of (B, H, W) maps to [0, 1]; constant images map to zeros."""
    flat = values.flatten(1).float()
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = hi - lo
    scaled = (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny)
    out = torch.where(span > 0, scaled, torch.zeros_like(flat))
    return out.view_as(values)


def upsample(lowres: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (B, h, w) maps to (B, *size), as the CAM papers do (pixel centres aligned)."""
    if tuple(lowres.shape[-2:]) == tuple(size):
        return lowres
    out = F.interpolate(lowres[:, None], size=tuple(size), mode="bilinear", align_corners=align_corners)
    return out[:, 0]


def upsample_density(lowres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, h, w) attention distributions, spread over the pixels (÷ pixels per cell),
    so that a map that sums to 1 on its grid sums to ~1 on the image."""
    return upsample(lowres, size) * (lowres.shape[-2] * lowres.shape[-1]) / (size[0] * size[1])
