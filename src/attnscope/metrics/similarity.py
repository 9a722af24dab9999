"""Similarity of two batches of maps, as the sanity checks of Adebayo et al. (NeurIPS 2018) measure it.

Each similarity takes maps `a`, `b` of one shape (…, H, W) — one map (H, W), a batch (B, H, W), K targets
(B, K, H, W) — as tensors or `AttentionMap`s, and returns one value per map, in the maps' leading shape
((), (B,) or (B, K)), with the normalisation the paper's code applies before it:

- `spearman_abs`: Spearman rank correlation of |a| / max|a| and |b| / max|b| ("absolute value");
- `spearman_signed`: Spearman rank correlation of a / max|a| and b / max|b| ("diverging");
- `ssim`: SSIM (Wang et al. 2004, scikit-image, Gaussian window) of the maps min–max scaled to [0, 1];
- `hog_pearson`, `hog_spearman`: Pearson / Spearman correlation of the HOG features (Dalal & Triggs
  2005, scikit-image, 16 px cells) of the maps min–max scaled to [0, 1].

Division by a positive maximum does not change ranks, so the two Spearman normalisations are
named for what they are but change no number. A correlation with a constant map is undefined
and comes back as NaN (never silently 0); `mean_ci` averages over the images where it is defined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attnscope import stats
from attnscope.errors import InputError
from attnscope.maps import normalize
from attnscope.metrics.checks import as_values, check_pair
from attnscope.registry import Registry

SIMILARITIES: Registry = Registry("similarity")


def rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dim of (B, N), ties given their average rank (scipy's `rankdata`)."""
    b, n = x.shape
    order = x.argsort(dim=1, stable=True)  # (B, N)
    ordered = x.gather(1, order)
    pos = torch.arange(n, device=x.device).expand(b, n)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # first of a tie group
    end = torch.ones_like(new)
    end[:, :-1] = new[:, 1:]  # last of a tie group
    first = torch.where(new, pos, 0).cummax(dim=1).values
    last = torch.where(end, pos, n).flip(1).cummin(dim=1).values.flip(1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of (B, N) `a` with the same row of `b`; NaN where a row is constant."""
    a, b = a.double(), b.double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation (ties: average ranks) of each map of `a` with the same map of `b`: maps of one
    shape (…, H, W) — tensors or `AttentionMap`s — give one value per map in the leading shape ((), (B,),
    (B, K)); two vectors (N,) give one value (). NaN where a map is constant."""
    a, b, lead = pair(a, b)
    return pearson(rank(a.flatten(1)), rank(b.flatten(1))).view(lead)


def pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Two sets of maps of one shape (…, H, W) (or two vectors (N,)) as batches (M, H, W) checked like
    every metric's maps, and their leading shape, that of the values to return."""
    a, b = as_values(a), as_values(b)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise InputError(f"maps to compare must be tensors or AttentionMaps, got {type(a).__name__} and "
                         f"{type(b).__name__}")
    if a.shape != b.shape or a.dim() == 0:
        raise InputError(f"maps to compare must have the same shape (…, H, W), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.dim() == 1:
        a, b = a[None, None], b[None, None]
    lead = tuple(a.shape[:-2])
    a, b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    check_pair(a, b)
    return a, b, lead


def abs_norm(maps: torch.Tensor) -> torch.Tensor:
    """|M| / max|M| per image (the paper's `abs_grayscale_norm` of a 2-D mask); an all-zero map stays 0."""
    m = maps.abs()
    top = m.flatten(1).amax(1).clamp_min(torch.finfo(m.dtype).tiny)
    return m / top[:, None, None]


def diverging_norm(maps: torch.Tensor) -> torch.Tensor:
    """M / max|M| per image, in [-1, 1] (the paper's `diverging_norm` of a 2-D mask)."""
    top = maps.abs().flatten(1).amax(1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / top[:, None, None]


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The 1-D Gaussian scipy.ndimage filters with: radius int(truncate·σ + 0.5), normalised to sum 1."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * x**2 / sigma**2)
    return k / k.sum()


def ssim_unit(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM of (B, H, W) images, as scikit-image's `structural_similarity(gaussian_weights=True)`:
    11-tap Gaussian window (σ = 1.5), sample covariance, mean over pixels ≥ 5 px from the border."""
    k = gaussian_kernel().to(x.device)
    r = (k.numel() - 1) // 2
    if min(x.shape[-2:]) < 2 * r + 1:
        raise InputError(f"SSIM needs maps of at least {2 * r + 1}×{2 * r + 1} px, got {tuple(x.shape[-2:])}")

    def blur(t: torch.Tensor) -> torch.Tensor:  # (B, H, W) -> (B, H - 2r, W - 2r), valid part only
        t = F.conv2d(t[:, None], k.view(1, 1, 1, -1))
        return F.conv2d(t, k.view(1, 1, -1, 1))[:, 0]

    x, y = x.double(), y.double()
    n = (2 * r + 1) ** 2
    norm = n / (n - 1)
    ux, uy = blur(x), blur(y)
    vx, vy = norm * (blur(x * x) - ux * ux), norm * (blur(y * y) - uy * uy)
    vxy = norm * (blur(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def hog_features(maps: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """HOG features (scikit-image defaults: 9 orientations, 3×3-cell blocks, L2-Hys) of maps min–max
    scaled to [0, 1], with `cell`×`cell` px cells as in the paper's code. Returns (B, F)."""
    from skimage.feature import hog

    h, w = maps.shape[-2:]
    if h < 3 * cell or w < 3 * cell:
        raise InputError(
            f"HOG with {cell} px cells and 3×3-cell blocks needs maps of at least {3 * cell}×{3 * cell} px, "
            f"got {h}×{w}"
        )
    x = normalize(maps).double().cpu().numpy()
    return torch.from_numpy(np.stack([hog(m, pixels_per_cell=(cell, cell)) for m in x])).to(maps.device)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class Similarity:
    """A similarity in stages, so a reference set of maps is prepared once and compared many times:
    features = `prepare(base(maps (B, H, W)))`, then `compare(features_a, features_b) -> (B,)`.
    Similarities with the same `base` (the HOG ones) share it within one `prepare` call."""

    prepare: Callable[[torch.Tensor], torch.Tensor]
    compare: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    base: Callable[[torch.Tensor], torch.Tensor] = _same
    min_side: int = 1  # smallest map height and width it is defined for

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        return self.prepare(self.base(maps))

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """One value per map of two sets of maps of one shape (…, H, W), in their leading shape (see `pair`)."""
        a, b, lead = pair(a, b)
        return self.compare(self.features(a), self.features(b)).view(lead)


def _ranked_flat(norm: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda maps: rank(norm(maps.double()).flatten(1))


SIMILARITIES.register("spearman_abs", Similarity(_ranked_flat(abs_norm), pearson))
SIMILARITIES.register("spearman_signed", Similarity(_ranked_flat(diverging_norm), pearson))
SIMILARITIES.register("ssim", Similarity(lambda m: normalize(m).double(), ssim_unit, min_side=11))
SIMILARITIES.register("hog_pearson", Similarity(_same, pearson, hog_features, min_side=48))
SIMILARITIES.register("hog_spearman", Similarity(rank, pearson, hog_features, min_side=48))


def too_small(name: str, size: Sequence[int]) -> str | None:
    """Why similarity `name` is undefined for maps of `size` (H, W) (HOG's 16 px cells in 3×3 blocks need
    48 px, SSIM's 11-tap window 11 px), or None where it is defined."""
    need = SIMILARITIES.get(name).min_side
    h, w = int(size[0]), int(size[1])
    return None if min(h, w) >= need else f"{name} needs maps of at least {need}×{need} px, got {h}×{w}"


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of |a| / max|a| and |b| / max|b| (Adebayo et al. 2018, "absolute value"): maps
    (…, H, W), one value per map ((), (B,) or (B, K))."""
    return SIMILARITIES.get("spearman_abs")(a, b)


def spearman_signed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of a / max|a| and b / max|b| (Adebayo et al. 2018, "diverging"): maps (…, H, W),
    one value per map."""
    return SIMILARITIES.get("spearman_signed")(a, b)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al., IEEE TIP 2004) of the maps min–max scaled to [0, 1], Gaussian window σ = 1.5,
    data range 2 as the paper's code had it (the 2018 scikit-image took a float image's range as
    (-1, 1) from its dtype). Maps (…, H, W), one value per map."""
    return SIMILARITIES.get("ssim")(a, b)


def hog_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the HOG features of the two maps (Adebayo et al. 2018): maps (…, H, W), one value
    per map."""
    return SIMILARITIES.get("hog_pearson")(a, b)


def hog_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of the HOG features of the two maps (as the paper's code computes it): maps
    (…, H, W), one value per map."""
    return SIMILARITIES.get("hog_spearman")(a, b)


def prepare(maps: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """`{name: features}` of `maps` (B, H, W) for each similarity named, to `compare` against other maps later."""
    maps = as_values(maps)
    check_pair(maps, maps)
    bases: dict[Callable, torch.Tensor] = {}
    out = {}
    for name in names:
        sim = SIMILARITIES.get(name)
        if sim.base not in bases:
            bases[sim.base] = sim.base(maps)
        out[name] = sim.prepare(bases[sim.base])
    return out


def compare(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`{name: (B,) values}` from two `prepare`d sets of features (same names)."""
    return {name: SIMILARITIES.get(name).compare(a[name], b[name]).double().cpu() for name in a}


def similarities(a: torch.Tensor, b: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """`{name: (B,) values}` of maps (B, H, W) for each similarity named (see `SIMILARITIES.names()`)."""
    a, b = as_values(a), as_values(b)
    check_pair(a, b)
    return compare(prepare(a, names), prepare(b, names))


def mean_ci(values: torch.Tensor, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of the defined (non-NaN) values and its Student-t confidence interval: (mean, low, high, n).

    With fewer than two defined values the interval is NaN; with none the mean is NaN too.
    """
    v = values.double().flatten()
    v = v[~torch.isnan(v)]
    n = int(v.numel())
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    return _t_interval(float(v.mean()), float(v.std(unbiased=True)) if n > 1 else float("nan"), n, level)


def _t_interval(mean: float, std: float, n: int, level: float) -> tuple[float, float, float, int]:
    """(mean, mean ∓ t_{(1+level)/2, n−1} · std / √n, n): `attnscope.stats.t_interval_of` as a tuple."""
    ci = stats.t_interval_of(mean, std, n, level)
    return ci.mean, ci.low, ci.high, ci.n


def sums(values: torch.Tensor) -> torch.Tensor:
    """(n, Σx, Σx²) in float64 over the defined (non-NaN) values: what `mean_ci_of_sums` needs, and what
    adds up across the shards of a data set."""
    v = values.double().flatten()
    v = v[~torch.isnan(v)]
    return torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), v.square().sum()])


def mean_ci_of_sums(totals: torch.Tensor, level: float = 0.95) -> tuple[float, float, float, int]:
    """`mean_ci` from the sums (n, Σx, Σx²) of the defined values: mean Σx/n, s² = (Σx² − (Σx)²/n)/(n − 1).

    The difference cancels where the spread is tiny against the mean: s² then carries a relative error of
    about 1e-16 · mean² / s² (values ≈ 2.3 with s = 3e-4: the bounds ~3e-12 from `mean_ci`'s)."""
    n, total, squares = (float(x) for x in totals.double())
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    variance = max(squares - total * total / n, 0.0) / (n - 1) if n > 1 else float("nan")
    return _t_interval(total / n, variance**0.5, int(n), level)

