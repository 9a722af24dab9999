"""What the colours of a map mean: sequential or signed, the limits, the colour map and the opacity.

The rule, the same for every figure, overlay and report panel:

- A map is **signed** when its method's options make it signed (`relu=False`, `abs=False`,
  `reduce="sum"`), when the method is signed by nature (occlusion: a score change), or when any of
  its values is negative. Otherwise it is **sequential** (non-negative).
- Sequential maps use the perceptual colour map `inferno` (dark = low, yellow = high) from the
  image's minimum to its maximum ("per-image min–max"), at a constant opacity.
- Signed maps use the diverging `RdBu_r` (blue < 0 < red) on symmetric limits ±max|v| of the image,
  and their opacity grows with |v|: zero is transparent, so the photo shows where the map is 0.
- `shared=True` gives every image of a batch the same limits: the `percentile`-th percentile of |v|
  (signed) or of v (sequential, from the batch's minimum), values beyond it clipped.

NaN pixels (e.g. outside a centre crop) are transparent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps

SEQUENTIAL_CMAP = "inferno"
DIVERGING_CMAP = "RdBu_r"
ALPHA = {False: 0.5, True: 0.85}  # opacity of a sequential map; of a signed map's largest |v|
SIGNED_BY_NATURE = frozenset({"occlusion"})  # signed whatever the options
_SIGNED_OPTIONS: dict[str, dict[Any, bool]] = {  # option → value → signed?
    "relu": {True: False, False: True},
    "abs": {True: False, False: True},
    "reduce": {"sum": True, "abs-sum": False, "abs-max": False},
}


def signed_by_options(method: str | None, options: Mapping[str, Any] | None = None) -> bool | None:
    """Whether the method's options (or its nature) make its maps signed; None when they do not say."""
    if method is not None and method.split("/")[0] in SIGNED_BY_NATURE:
        return True
    said = [table[value] for key, table in _SIGNED_OPTIONS.items()
            for value in [(options or {}).get(key)] if _hashable(value) and value in table]
    return any(said) if said else None


def is_signed(values: torch.Tensor, method: str | None = None, options: Mapping[str, Any] | None = None) -> bool:
    """The rule of this module: signed by the options or the method's nature, or any value < 0."""
    return bool(signed_by_options(method, options)) or bool((torch.nan_to_num(values.detach()) < 0).any())


@dataclass(frozen=True)
class Scale:
    """Limits per image (B,) and how they were chosen; `unit` maps values to [0, 1] or [-1, 1] (signed)."""

    signed: bool
    low: torch.Tensor  # (B,) the value drawn at the low end of the colour bar
    high: torch.Tensor  # (B,) the value drawn at the high end
    rule: str  # how the limits were chosen, for the legend

    @property
    def cmap(self) -> str:
        return DIVERGING_CMAP if self.signed else SEQUENTIAL_CMAP

    def unit(self, values: torch.Tensor) -> torch.Tensor:
        """(B, H, W) values → [0, 1] (sequential) or [-1, 1] (signed), clipped; NaN stays NaN."""
        v = values.detach().double().cpu()
        lo, hi = self.low.double()[:, None, None], self.high.double()[:, None, None]
        span = (hi - lo).clamp_min(1e-300)
        if self.signed:
            out = (v / (hi.clamp_min(1e-300))).clamp(-1, 1)
            return torch.where(hi > 0, out, torch.where(torch.isnan(v), v, torch.zeros_like(v)))
        out = ((v - lo) / span).clamp(0, 1)
        return torch.where(hi > lo, out, torch.where(torch.isnan(v), v, torch.zeros_like(v)))

    def labels(self, index: int | None = None) -> tuple[str, str, str]:
        """Texts (ASCII, for any font) at the low end, middle and high end of the colour bar (values when
        `index` is given)."""
        if index is None:
            return ("-max|v|", "0", "+max|v|") if self.signed else ("min", "", "max")
        lo, hi = float(self.low[index]), float(self.high[index])
        return (_short(lo), "0" if self.signed else "", _short(hi))


def scale(values: torch.Tensor, signed: bool, shared: bool = False, percentile: float = 99.0) -> Scale:
    """The limits of (B, H, W) maps by the rule of this module (NaN ignored; an all-NaN image gets 0, 0)."""
    v = values.detach().double().cpu()
    b = v.shape[0]
    finite = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    known = torch.isfinite(v)
    if shared:
        pool = v[known]
        if pool.numel() == 0:
            lo = hi = 0.0
        elif signed:
            hi = float(torch.quantile(pool.abs(), percentile / 100)) if pool.numel() else 0.0
            lo = -hi
        else:
            lo, hi = float(pool.min()), float(torch.quantile(pool, percentile / 100))
        rule = (f"+-{percentile:g}th percentile of |v| over the batch" if signed
                else f"batch minimum to the {percentile:g}th percentile over the batch")
        return Scale(signed, torch.full((b,), lo), torch.full((b,), hi), rule)
    if signed:
        hi = finite.abs().flatten(1).amax(1)
        return Scale(True, -hi, hi, "+-max|v| per image, 0 transparent")
    big, small = torch.finfo(torch.float64).max, torch.finfo(torch.float64).min
    lo = torch.where(known, v, big).flatten(1).amin(1)
    hi = torch.where(known, v, small).flatten(1).amax(1)
    none = ~known.flatten(1).any(1)
    return Scale(False, torch.where(none, 0.0, lo), torch.where(none, 0.0, hi), "per-image min–max")


def rgba(unit: torch.Tensor, signed: bool, alpha: float | None = None) -> np.ndarray:
    """(..., H, W) values from `Scale.unit` → float RGBA (..., H, W, 4): colour map, opacity, NaN transparent."""
    u = unit.detach().double().cpu().numpy()
    nan = np.isnan(u)
    u = np.nan_to_num(u, nan=0.0)
    top = ALPHA[signed] if alpha is None else alpha
    if signed:
        out = colormaps[DIVERGING_CMAP]((u + 1) / 2)
        out[..., 3] = top * np.abs(u)
    else:
        out = colormaps[SEQUENTIAL_CMAP](u)
        out[..., 3] = top
    out[..., 3][nan] = 0.0
    return out


def blend(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) under a float RGBA layer (H, W, 4) → uint8 RGB."""
    a = layer[..., 3:4]
    out = (1 - a) * base.astype(np.float64) + a * layer[..., :3] * 255.0
    return out.round().clip(0, 255).astype(np.uint8)


def colour_bar(signed: bool, width: int = 128, height: int = 8) -> np.ndarray:
    """uint8 RGB (height, width, 3): the colour map from the low end to the high end, fully opaque."""
    ramp = np.linspace(-1.0, 1.0, width) if signed else np.linspace(0.0, 1.0, width)
    colours = colormaps[DIVERGING_CMAP]((ramp + 1) / 2) if signed else colormaps[SEQUENTIAL_CMAP](ramp)
    row = (colours[:, :3] * 255).round().astype(np.uint8)
    return np.repeat(row[None], height, axis=0)


def meaning(signed: bool) -> str:
    """One sentence saying what the colours mean."""
    if signed:
        return f"{DIVERGING_CMAP}: blue < 0 < red, opacity grows with |v| (0 transparent)"
    return f"{SEQUENTIAL_CMAP}: dark = low, yellow = high"


def _short(v: float) -> str:
    return f"{v:.3g}"


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
