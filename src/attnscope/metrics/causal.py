"""Faithfulness against a causal reference: does a map rank the regions of an image as the model needs them?

Abnar & Zuidema (ACL 2020) judge attention maps by their Spearman correlation, per example, with the
importance that "blank-out" gives each input token (the output's change when the token is removed) and
with input gradients; FunnyBirds (Hesse et al., ICCV 2023) remove whole parts of a rendered scene. Here:

- `blank_out(f, images, grid)`: Δ_g = f(x) − f(x with cell g of a grid × grid partition set to the
  substrate) for every cell, (B, G); one batched pass over the B·G blanked copies.
- `cell_sums(maps, grid)`: each map summed over the same cells, (B, G).
- `causal_agreement(maps, reference, grid)`: Spearman ρ per image between `cell_sums(maps)` and a
  (B, G) reference (blank-out, or an input gradient summed per cell), NaN where either is constant.
- `part_drops(f, images, removed, present)` and `part_agreement(maps, regions, drops, present)`: the same
  with the exact counterfactuals of generated scenes (`ClutteredDigits.without`, `DigitScenes.without`):
  Spearman over an image's parts of map mass and score drop, and whether the part with most mass is the
  one whose removal costs most.
- `substitution_gap(scores, substituted)`: how much the explained score falls when the model's own
  attention is replaced by a uniform (or permuted) one (Wiegreffe & Pinter, EMNLP 2019: a model that
  does not lose by it does not use where it attends).
- `prefix_share`, `background_share` and `norm_outliers`: a ViT's CLS attention on its extra tokens and
  on patches off the object, and patch tokens of outlying norm (the "high-norm tokens" that Darcet et al.,
  ICLR 2024, move into registers).

A scorer `f(x, source) -> (N,)` scores perturbed copies `x` for the class of their source image (see
`attnscope.metrics.faithfulness`); the metrics never see a model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_maps
from attnscope.metrics.declare import Batch, declare
from attnscope.metrics.similarity import pearson, rank

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def row_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman ρ of each row of (B, N) `a` with the same row of `b` (ties: average ranks); NaN for a flat row."""
    return pearson(rank(a.double()), rank(b.double()))


def _cells(h: int, w: int, grid: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1 or h % grid or w % grid:
        raise InputError(f"grid must be an int >= 1 that divides the map's size {h}x{w}, got {grid!r}")


def cell_sums(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """Raw map values summed over each cell of a grid × grid partition (raster order): (B, H, W) → (B, grid²)."""
    maps = check_maps(maps)
    b, h, w = maps.shape
    _cells(h, w, grid)
    cells = maps.double().reshape(b, grid, h // grid, grid, w // grid).sum((2, 4))  # (B, grid, grid)
    return cells.reshape(b, grid * grid)


def blank_out(f: Scorer, images: torch.Tensor, grid: int, substrate: torch.Tensor | None = None,
              batch_size: int = 256, base: torch.Tensor | None = None) -> torch.Tensor:
    """Δ (B, grid²): f(x) − f(x with one cell replaced by `substrate` (default 0)), every cell, batched;
    `base`: f(x) (B,) where the caller has it (one pass saved)."""
    if images.dim() != 4:
        raise InputError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    _cells(h, w, grid)
    fill = None if substrate is None else substrate.expand_as(images)
    g = grid * grid
    cell = torch.arange(h * w, device=images.device).reshape(h, w)
    cell = (cell // w // (h // grid)) * grid + (cell % w) // (w // grid)  # (H, W) cell index of each pixel
    drops = []
    base = _unperturbed(f, images, base)  # (B,)
    flat = torch.arange(b * g, device=images.device)
    for start in range(0, b * g, batch_size):
        rows = flat[start:start + batch_size]
        src, which = rows // g, rows % g
        off = (cell[None] == which[:, None, None])[:, None]  # (n, 1, H, W)
        x = images[src].masked_fill_(off, 0.0) if fill is None else torch.where(off, fill[src], images[src])
        drops.append(base[src] - f(x, src).double())
    return torch.cat(drops).reshape(b, g)


def _unperturbed(f: Scorer, images: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """f(x) (B,) in float64: `base` where given (checked against the batch), else one pass."""
    if base is None:
        return f(images, torch.arange(images.shape[0], device=images.device)).double()
    if base.shape != images.shape[:1]:
        raise InputError(f"base must be f(images) of shape ({images.shape[0]},), got {tuple(base.shape)}")
    return base.to(images.device).double()


def causal_agreement(maps: torch.Tensor, reference: torch.Tensor, grid: int) -> torch.Tensor:
    """Spearman ρ (B,) per image between the map's cell sums and `reference` (B, grid²); NaN if either is flat."""
    sums = cell_sums(maps, grid)
    if reference.shape != sums.shape:
        raise InputError(f"reference must be (B, grid²) = {tuple(sums.shape)}, got {tuple(reference.shape)}")
    return row_spearman(sums, reference.to(sums.device).double())


def _blankout_column(maps: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The leaderboard's and the tracker's `blankout_rho`: the finest grid of 8, 4, 2 cells a side that divides the
    images, the batch's scorer, the reference computed once per batch (every method shares it)."""
    h, w = batch.images.shape[-2:]
    grid = next(g for g in (8, 4, 2, 1) if h % g == 0 and w % g == 0)
    reference = batch.cached("blankout", batch.images,
                             lambda: blank_out(batch.scorer, batch.images, grid, batch_size=batch.batch_size))
    return causal_agreement(maps, reference, grid)


declare("blankout_rho", "faithfulness", _blankout_column, model=True, default=False, short="ρblank",
        legend="Spearman ρ of the map's cells with the score's drop when each is blanked out (Abnar & Zuidema)",
        bounds=(-1.0, 1.0))(causal_agreement)


def part_drops(f: Scorer, images: torch.Tensor, removed: torch.Tensor, present: torch.Tensor,
               batch_size: int = 256, base: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) f(x) − f(x without part k) from the exact counterfactuals `removed` (B, K, C, H, W); NaN where
    part k is not in the image (`present` (B, K) bool); `base`: f(x) (B,) where the caller has it."""
    b, k = present.shape
    if removed.shape[:2] != (b, k) or removed.shape[2:] != images.shape[1:]:
        raise InputError(f"removed must be (B, K, C, H, W) = ({b}, {k}, {', '.join(map(str, images.shape[1:]))}), "
                         f"got {tuple(removed.shape)}")
    base = _unperturbed(f, images, base)
    rows = present.flatten().nonzero()[:, 0]
    out = torch.full((b * k,), float("nan"), dtype=torch.float64, device=images.device)
    for start in range(0, rows.numel(), batch_size):
        r = rows[start:start + batch_size]
        out[r] = base[r // k] - f(removed.flatten(0, 1)[r], r // k).double()
    return out.reshape(b, k)


def part_mass(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(B, K) share of each map's positive mass on the pixels of part k (`regions` (B, K, H, W) bool)."""
    pos = check_maps(maps).double().clamp_min(0)
    if regions.shape[0] != pos.shape[0] or regions.shape[2:] != pos.shape[1:]:
        raise InputError(f"regions must be (B, K, H, W) with (B, H, W) = {tuple(pos.shape)}, got "
                         f"{tuple(regions.shape)}")
    total = pos.flatten(1).sum(1).clamp_min(1e-300)
    inside = torch.bmm(regions.flatten(2).to(pos.dtype), pos.flatten(1)[:, :, None])[:, :, 0]  # (B, K)
    return inside / total[:, None]


def part_agreement(maps: torch.Tensor, regions: torch.Tensor, drops: torch.Tensor,
                   present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ρ, top), each (B,): Spearman over the parts present between mass and drop (NaN with < 3 parts or a
    tie everywhere), and 1 where the part with most mass is the part whose removal costs most (NaN with < 2)."""
    mass = part_mass(maps, regions)
    present = present.to(mass.device)
    drops = drops.to(mass.device, torch.float64)
    rho = torch.full((mass.shape[0],), float("nan"), dtype=torch.float64, device=mass.device)
    top = torch.full_like(rho, float("nan"))
    counts = present.sum(1)
    for pattern in present[counts >= 3].unique(dim=0):  # images with the same parts present: one batched ρ
        rows = (present == pattern).all(1).nonzero()[:, 0]
        rho[rows] = row_spearman(mass[rows][:, pattern], drops[rows][:, pattern])
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=mass.device)
    high, low = mass.where(present, -inf), mass.where(present, inf)
    several = (counts >= 2) & (high.amax(1) > low.amin(1))  # two parts or more, not all of the same mass
    same = high.argmax(1) == drops.where(present, -inf).argmax(1)  # the first part of most mass, of most drop
    top[several] = same[several].double()
    return rho.cpu(), top.cpu()


def substitution_gap(scores: torch.Tensor, substituted: torch.Tensor) -> torch.Tensor:
    """(B,) the explained score with the model's own attention minus the score with it substituted."""
    if scores.shape != substituted.shape:
        raise InputError(f"scores {tuple(scores.shape)} and substituted scores {tuple(substituted.shape)} differ")
    return scores.double() - substituted.double()


def prefix_share(cls_rows: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B,) share of the CLS token's attention (rows (B, T), summing to 1) on the `prefix` extra tokens."""
    return cls_rows.double()[:, :prefix].sum(1) / cls_rows.double().sum(1)


def background_share(cls_rows: torch.Tensor, prefix: int, background: torch.Tensor) -> torch.Tensor:
    """(B,) share of the CLS token's attention on patch tokens off the object (`background` (B, N) bool over
    the N = T − prefix patches)."""
    patches = cls_rows.double()[:, prefix:]
    if background.shape != patches.shape:
        raise InputError(f"background must be (B, patches) = {tuple(patches.shape)}, got {tuple(background.shape)}")
    return (patches * background).sum(1) / cls_rows.double().sum(1)


def norm_outliers(norms: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
    """(B,) share of tokens whose norm exceeds `factor` × the image's median token norm (`norms` (B, N))."""
    median = norms.double().median(dim=1, keepdim=True).values
    return (norms.double() > factor * median).double().mean(1)
