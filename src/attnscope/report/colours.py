"""What the colours of a map mean: sequential or signed, the limits, the colour map and the opacity.

The rule, the same for every figure, overlay and report panel:

- A map is **signed** when its method's options (those given, else the method's defaults) make it
  signed (`relu=False`, `abs=False`, `reduce="sum"`), when the method is signed by nature (occlusion:
  a score change), or when any of its values is negative. Otherwise it is **sequential** (non-negative).
- Sequential maps use the perceptual colour map `inferno` (dark = low, yellow = high) from the
  image's minimum to its maximum ("per-image min–max"), at a constant opacity.
- Signed maps use the diverging `RdBu_r` (blue < 0 < red) on symmetric limits ±p, p the 99th
  percentile of the image's |v| (its maximum where that is 0), larger |v| clipped to ±p (an outlier
  clip like captum's `outlier_perc`, which clips by share of the total |v| instead); their opacity
  grows with |v|: zero is transparent, so the photo shows where the map is 0.
- `shared=True` gives every image of a batch the same limits: the `percentile`-th percentile of |v|
  (signed) or of v (sequential, from the batch's minimum), values beyond it clipped.
- In a figure, `scale="image"` (the default) keeps each map's own limits: every map shows its shape, and a
  map whose peak is below `WEAK` (10 %) of the strongest map of its method in the figure is marked "weak",
  so a weak map never looks strong without a mark. `scale="row"` gives the maps of one method in a row
  (e.g. one image's top-5 classes) their widest limits, `scale="figure"` every map of a method in the
  figure (`pooled`): then how bright a map is says how strong it is.

NaN pixels (e.g. outside a centre crop) are transparent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps

from attnscope.registry import METHODS

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
    """Whether the method's options (given, else its registered defaults) or its nature make its maps
    signed; None when they do not say."""
    base = method.split("/")[0] if method else None
    if base in SIGNED_BY_NATURE:
        return True
    merged = {**_defaults(base), **(options or {})}
    said = [table[value] for key, table in _SIGNED_OPTIONS.items()
            for value in [merged.get(key)] if _hashable(value) and value in table]
    return any(said) if said else None


def _defaults(method: str | None) -> Mapping[str, Any]:
    """The registered method's default options ({} for an unknown name)."""
    spec = METHODS.get(method) if method is not None and method in METHODS else None
    defaults = getattr(spec, "defaults", None)
    return defaults if isinstance(defaults, Mapping) else {}


def is_signed(values: torch.Tensor, method: str | None = None, options: Mapping[str, Any] | None = None) -> bool:
    """The rule of this module: signed by the options or the method's nature, or any value < 0."""
    return bool(signed_by_options(method, options)) or bool((torch.nan_to_num(values.detach()) < 0).any())


@dataclass(frozen=True)
class Scale:
    """Limits per image (B,) and how they were chosen; `unit` maps values to [0, 1] or [-1, 1] (signed)."""

    signed: bool
    low: torch.Tensor  # (B,) the value drawn at the low end of the colour bar
    high: torch.Tensor  # (B,) the value drawn at the high end
    rule: str  # how the limits were chosen, for the legend (pN: the N-th percentile)
    percentile: float = 99.0  # of |v|, the limits of a signed map

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
            p = f"p{self.percentile:g}"
            return (f"-{p}", "0", f"+{p}") if self.signed else ("min", "", "max")
        lo, hi = float(self.low[index]), float(self.high[index])
        return (_short(lo), "0" if self.signed else "", _short(hi))


def scale(values: torch.Tensor, signed: bool, shared: bool = False, percentile: float = 99.0) -> Scale:
    """The limits of (B, H, W) maps by the rule of this module (NaN ignored; an all-NaN image gets 0, 0).
    `percentile` of |v| bounds signed maps (per image, or over the batch with `shared`)."""
    v = values.detach().double().cpu().flatten(1).numpy()  # numpy: no size limit, no thread start-up
    b = v.shape[0]
    known = np.isfinite(v)
    full = lambda x: torch.full((b,), float(x), dtype=torch.float64)
    if shared:
        pool = v[known]
        if pool.size == 0:
            lo = hi = 0.0
        elif signed:
            hi = float(np.percentile(np.abs(pool), percentile))
            lo = -hi
        else:
            lo, hi = float(pool.min()), float(np.percentile(pool, percentile))
        rule = (f"±p{percentile:g} of |v| over the batch" if signed
                else f"batch min to p{percentile:g} over the batch")
        return Scale(signed, full(lo), full(hi), rule, percentile)
    lows, highs = np.zeros(b), np.zeros(b)
    for i in range(b):
        row = v[i][known[i]]
        if row.size == 0:
            continue
        if signed:
            magnitude = np.abs(row)
            pct = float(np.percentile(magnitude, percentile))
            highs[i] = pct if pct > 0 else float(magnitude.max())  # a map that is mostly zero keeps its maximum
            lows[i] = -highs[i]
        else:
            lows[i], highs[i] = row.min(), row.max()
    rule = f"±p{percentile:g} of |v| per image" if signed else "min–max per image"
    return Scale(signed, torch.from_numpy(lows), torch.from_numpy(highs), rule, percentile)


SCALES = ("image", "row", "figure")  # what maps of one method share one scale in a figure (`pooled`)
WEAK = 0.1  # a map whose peak is below this share of the strongest of its method in the figure is marked weak


def pooled(limits: Sequence[Scale], rows: bool) -> list[Scale]:
    """Scales of one method's maps in a figure (one `Scale` per column, (B,) entries each) made to share
    limits: over the figure (every entry of every column: the lowest low, the highest high), or over each
    row (`rows=True`: entry i of every column). Each map then shows how strong it is beside the others."""
    low = torch.stack([s.low for s in limits])  # (columns, B)
    high = torch.stack([s.high for s in limits])
    if rows:
        low, high = low.min(0, keepdim=True).values.expand_as(low), high.max(0, keepdim=True).values.expand_as(high)
        where = "over the row"
    else:
        low, high = torch.full_like(low, float(low.min())), torch.full_like(high, float(high.max()))
        where = "over the figure"
    if limits and limits[0].signed:
        high = torch.maximum(high, -low)
        low = -high
    rule = (f"±p{limits[0].percentile:g} of |v|, largest {where}" if limits and limits[0].signed
            else f"min–max {where}")
    return [Scale(s.signed, low[j].clone(), high[j].clone(), rule, s.percentile) for j, s in enumerate(limits)]


def peaks(values: torch.Tensor) -> np.ndarray:
    """The peak max |v| of each of (B, H, W) maps, NaN ignored (0 for an all-NaN map)."""
    v = np.abs(values.detach().double().cpu().flatten(1).numpy())
    v[~np.isfinite(v)] = 0.0
    return v.max(1) if v.shape[1] else np.zeros(v.shape[0])


def weak(peak: float, strongest: float) -> bool:
    """Whether a map's `peak` is far below (< `WEAK` ×) the `strongest` peak of its method in the figure."""
    return strongest > 0 and peak < WEAK * strongest


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
