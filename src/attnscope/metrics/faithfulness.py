"""Faithfulness of a map to the model: does what it marks as important change the model's score?

The metrics never see a model. They take a scorer `f(x, source) -> scores`: `x` (N, C, H, W) are
perturbed copies of the images, `source` (N,) long says which image of the batch each one comes
from (so `f` can score each for that image's class), and `scores` (N,) are the explained scores —
the class probability in the papers. `attnscope.evaluate.class_probability` builds one.

Every ordered-removal metric here — deletion / insertion (RISE), pixel flipping and region
perturbation (Samek et al.), monotonicity (Arya et al.), IROF — is one curve: pixels pass from a
start image to an end image in the order of a rank per pixel, and the model scores each point.
`curve` computes it for all images and points in batches of `batch_size` perturbed inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from attnscope.errors import InputError
from attnscope.maps import normalize
from attnscope.metrics.checks import check_images, positive_int, scored
from attnscope.metrics.declare import Batch, declare
from attnscope.registry import Registry

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SUBSTRATES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("substrate")
ORDERS = ("morf", "lerf")


@SUBSTRATES.register("zero")
def zero_substrate(images: torch.Tensor) -> torch.Tensor:
    """A black image: what RISE's deletion puts in place of removed pixels."""
    return torch.zeros_like(images)


@SUBSTRATES.register("mean")
def mean_substrate(images: torch.Tensor) -> torch.Tensor:
    """Each image's per-channel mean (IROF's "mean" value, Rieger & Hansen 2020)."""
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()


def rise_kernel(size: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> torch.Tensor:
    """RISE's blur kernel (Petsiuk et al. 2018, `gkern`): a size×size delta smoothed by
    `scipy.ndimage.gaussian_filter(σ, mode="reflect", truncate)`, in float32. (size, size).

    scipy's filter is separable, its 1-D taps w_k ∝ exp(−k²/2σ²) for |k| ≤ int(truncate·σ + 0.5),
    and "reflect" mirrors about the edge (d c b a | a b c d | d c b a), so the 1-D kernel is
    g_i = Σ_k w_k · 1[reflect(i + k) = centre]; with σ = 5 on 11 px the mirrored tails make it almost flat.
    """
    radius = int(truncate * sigma + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * k**2 / sigma**2)
    w = w / w.sum()
    j = (torch.arange(size, dtype=torch.int64)[:, None] + k.long()[None, :]) % (2 * size)  # (size, taps)
    j = torch.where(j >= size, 2 * size - 1 - j, j)  # mirrored index inside [0, size)
    g = ((j == size // 2).double() * w).sum(1)  # (size,)
    return (g[:, None] * g[None, :]).float()


@SUBSTRATES.register("blur")
def blur_substrate(images: torch.Tensor) -> torch.Tensor:
    """RISE's insertion start: each channel convolved with `rise_kernel()` (11 px), zero padding 5."""
    k = rise_kernel().to(device=images.device, dtype=images.dtype)
    c = images.shape[1]
    return F.conv2d(images, k.expand(c, 1, *k.shape), padding=k.shape[-1] // 2, groups=c)


def importance_order(maps: torch.Tensor) -> torch.Tensor:
    """Position (B, H·W) of each pixel when sorted by decreasing map value (ties: raster order)."""
    flat = maps.flatten(1)
    order = (-flat).argsort(dim=1, stable=True)
    ranks = torch.arange(flat.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def curve(f: Scorer, start: torch.Tensor, end: torch.Tensor, rank: torch.Tensor, counts: Sequence[int],
          batch_size: int = 256) -> torch.Tensor:
    """Scores (B, P): at point p every pixel with `rank` (B, H, W) < `counts[p]` is taken from `end`
    (B, C, H, W), the others from `start`. All B·P inputs go to `f` in batches of `batch_size`."""
    positive_int("batch_size", batch_size)
    b = start.shape[0]
    n = len(counts)
    limits = torch.as_tensor(list(counts), device=start.device)
    rank = rank.to(start.device)[:, None]  # (B, 1, H, W)
    out = torch.empty(b * n, dtype=torch.float64)
    for lo in range(0, b * n, batch_size):
        flat = torch.arange(lo, min(lo + batch_size, b * n), device=start.device)
        i, k = flat // n, flat % n
        moved = rank[i] < limits[k].view(-1, 1, 1, 1)  # (N, 1, H, W)
        out[lo : lo + len(flat)] = scores_of(f, torch.where(moved, end[i], start[i]), i).double().cpu()
    return out.view(b, n)


def pixel_counts(h: int, w: int, step: int | None) -> list[int]:
    """Pixels moved at each point of a curve with `step` pixels per step (default one row): 0, s, 2s, …, H·W."""
    step = w if step is None else positive_int("pixels per step", step)
    return [min(k * step, h * w) for k in range(math.ceil(h * w / step) + 1)]


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under each curve (B, S + 1) over [0, 1] with equally spaced points (trapezoid rule, as RISE)."""
    n = curve.shape[1] - 1
    return (curve.sum(1) - curve[:, 0] / 2 - curve[:, -1] / 2) / n


def aopc(curve: torch.Tensor) -> torch.Tensor:
    """Area over the perturbation curve (Samek et al. 2016, Eq. 12): (1/(L+1)) Σ_{k=0}^{L} f(x⁰) − f(xᵏ). (B,)."""
    return (curve[:, :1] - curve).mean(1)


@scored
def deletion_curve(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "zero",
                   step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Scores (B, S + 1) while the most important pixels are replaced by `substrate`, `step` at a time."""
    check_images(images, maps)
    counts = pixel_counts(*maps.shape[-2:], step)
    return curve(f, images, substrate_of(substrate, images), _pixel_rank(maps), counts, batch_size)


@scored
def insertion_curve(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "blur",
                    step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Scores (B, S + 1) while the most important pixels are put back into `substrate`, `step` at a time."""
    check_images(images, maps)
    counts = pixel_counts(*maps.shape[-2:], step)
    return curve(f, substrate_of(substrate, images), images, _pixel_rank(maps), counts, batch_size)


def _deletion(m: torch.Tensor, b: Batch) -> torch.Tensor:
    """The zero-fill deletion curve of `m`, once for the columns that read it (deletion AUC, pixel-flipping AOPC)."""
    return b.cached("deletion_zero", m, lambda: deletion_curve(m, b.images, b.scorer, "zero", b.step, b.batch_size))


@declare("deletion_zero", "faithfulness", lambda m, b: auc(_deletion(m, b)), higher_is_better=False, model=True,
         short="del0", legend="deletion AUC, zero fill")
@declare("pixel_flip_aopc", "faithfulness", lambda m, b: aopc(_deletion(m, b)), model=True, short="flip",
         legend="pixel flipping AOPC")
@declare("deletion_blur", "faithfulness", lambda m, b: deletion_auc(m, b.images, b.scorer, "blur", b.step,
                                                                     b.batch_size),
         higher_is_better=False, model=True, short="delB", legend="deletion AUC, blur")
@scored
def deletion_auc(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "zero",
                 step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Deletion AUC (Petsiuk et al., BMVC 2018, RISE): area under the score as the most important
    pixels are removed first; lower is better. `step` pixels per step (default: one image row). (B,)."""
    return auc(deletion_curve(maps, images, f, substrate, step, batch_size))


@declare("insertion_blur", "faithfulness", lambda m, b: insertion_auc(m, b.images, b.scorer, "blur", b.step,
                                                                       b.batch_size),
         model=True, short="insB", legend="insertion AUC, blur")
@declare("insertion_zero", "faithfulness", lambda m, b: insertion_auc(m, b.images, b.scorer, "zero", b.step,
                                                                       b.batch_size),
         model=True, short="ins0", legend="insertion AUC, zero")
@scored
def insertion_auc(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "blur",
                  step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Insertion AUC (Petsiuk et al., BMVC 2018, RISE): area under the score as the most important
    pixels are inserted into RISE's blurred image first; higher is better. (B,)."""
    return auc(insertion_curve(maps, images, f, substrate, step, batch_size))


@scored
def pixel_flipping(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "zero",
                   step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Pixel flipping (Bach et al. 2015; Samek et al. 2016): scores (B, S + 1) as the most relevant
    pixels are flipped to `substrate` first, `step` pixels at a time — the deletion curve; summarise
    it with `aopc` (higher is better) or `auc` (lower is better)."""
    return deletion_curve(maps, images, f, substrate, step, batch_size)


@declare("region_aopc", "faithfulness", lambda m, b: aopc(region_perturbation(m, b.images, b.scorer,
                                                                           batch_size=b.batch_size)),
         default=False, model=True, short="region", legend="region perturbation AOPC")
@scored
def region_perturbation(maps: torch.Tensor, images: torch.Tensor, f: Scorer, patch: int = 8,
                        regions: int | None = None, substrate: str | torch.Tensor = "zero", order: str = "morf",
                        batch_size: int = 256) -> torch.Tensor:
    """Region perturbation (Samek et al., IEEE TNNLS 2016): scores (B, R + 1) as non-overlapping
    patch×patch regions are replaced by `substrate` in order of their summed relevance Σ_region M
    ("morf": most relevant first; "lerf": least), the first `regions` of them (default all).
    Regions tile the image from the top-left corner; those at the right/bottom edge may be smaller.
    Summarise with `aopc` (MoRF: higher is better)."""
    check_images(images, maps)
    positive_int("patch", patch)
    b, h, w = maps.shape
    ids = (torch.arange(h, device=maps.device)[:, None] // patch) * math.ceil(w / patch) + \
        torch.arange(w, device=maps.device)[None, :] // patch  # (H, W) region of each pixel
    n = int(ids.max()) + 1
    sums = torch.zeros(b, n, dtype=torch.float64, device=maps.device).index_add_(
        1, ids.flatten(), maps.flatten(1).double())  # (B, R)
    region_rank = importance_order(_ordered(sums, order))  # (B, R)
    rank = region_rank.gather(1, ids.flatten().expand(b, -1)).view(b, h, w)
    regions = n if regions is None else min(positive_int("regions", regions), n)
    return curve(f, images, substrate_of(substrate, images), rank, range(regions + 1), batch_size)


@declare("monotonicity", "faithfulness", lambda m, b: monotonicity(m, b.images, b.scorer, "zero", b.step,
                                                                    b.batch_size),
         default=False, model=True, short="mono", legend="monotonicity", bounds=(0, 1))
@scored
def monotonicity(maps: torch.Tensor, images: torch.Tensor, f: Scorer, substrate: str | torch.Tensor = "zero",
                 step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Monotonicity (Arya et al. 2019, AIX360): 1 if the score never falls as pixels are added to
    `substrate` in order of *increasing* relevance, `step` at a time (checked after each addition,
    as the reference code does), else 0. (B,)."""
    scores = insertion_curve(-maps, images, f, substrate, step, batch_size)[:, 1:]
    return (scores.diff(dim=1) >= 0).all(dim=1).double()


@scored
def masked_scores(maps: torch.Tensor, images: torch.Tensor, f: Scorer,
                  batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O): the score of each image and of its explanation map E = norm(M) ⊙ x (Grad-CAM++), each (B,)."""
    check_images(images, maps)
    positive_int("batch_size", batch_size)
    explained = normalize(maps)[:, None].to(images.dtype) * images  # (B, C, H, W)
    b = images.shape[0]
    source = torch.arange(b, device=images.device)
    both = torch.cat([images, explained])
    scores = torch.cat([scores_of(f, both[i : i + batch_size], torch.cat([source, source])[i : i + batch_size])
                        for i in range(0, 2 * b, batch_size)]).double().cpu()
    y, o = scores[:b], scores[b:]
    if not (y > 0).all():
        raise InputError("Average Drop divides by the score of the image: the scorer must give positive "
                         "scores (class probabilities), got a score <= 0")
    return y, o


def drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """max(0, Y − O) / Y per image: the summand of Average Drop (Chattopadhyay et al., WACV 2018)."""
    return (y - o).clamp_min(0) / y


def increase(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """1[Y < O] per image: the summand of Increase in Confidence (Chattopadhyay et al., WACV 2018)."""
    return (y < o).double()


def _masked(m: torch.Tensor, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O) of `m`, once for Average Drop and Increase in Confidence."""
    return b.cached("masked", m, lambda: masked_scores(m, b.images, b.scorer, b.batch_size))


@declare("avg_drop_pct", "faithfulness", lambda m, b: 100 * drop(*_masked(m, b)), higher_is_better=False,
         model=True, short="drop%", legend="Average Drop %", bounds=(0, 100))
@scored
def average_drop(maps: torch.Tensor, images: torch.Tensor, f: Scorer, batch_size: int = 256) -> torch.Tensor:
    """Average Drop (Grad-CAM++): max(0, Y − O) / Y per image; its mean × 100 is the paper's %. (B,)."""
    return drop(*masked_scores(maps, images, f, batch_size))


@declare("increase_pct", "faithfulness", lambda m, b: 100 * increase(*_masked(m, b)), model=True,
         short="inc%", legend="Increase in Confidence %", bounds=(0, 100))
@scored
def increase_in_confidence(maps: torch.Tensor, images: torch.Tensor, f: Scorer,
                           batch_size: int = 256) -> torch.Tensor:
    """Increase in Confidence (Grad-CAM++): 1[Y < O] per image; its mean × 100 is the paper's %. (B,)."""
    return increase(*masked_scores(maps, images, f, batch_size))


def scores_of(f: Scorer, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """`f(x, source)` without gradients, checked to be finite scores (N,)."""
    with torch.no_grad():
        s = f(x, source)
    if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0],):
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise InputError(f"the scorer must return scores ({x.shape[0]},) for {x.shape[0]} inputs, got {shape}")
    if not torch.isfinite(s).all():
        raise InputError("the scorer returned NaN or infinite scores")
    return s


def _pixel_rank(maps: torch.Tensor) -> torch.Tensor:
    return importance_order(maps).view_as(maps)


def _ordered(values: torch.Tensor, order: str) -> torch.Tensor:
    """`values` so that `importance_order` puts them in `order`: "morf" as they are, "lerf" negated."""
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    return values if order == "morf" else -values


def substrate_of(substrate: str | torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The substrate images (B, C, H, W): a name in `SUBSTRATES`, or a tensor of the images' shape."""
    if isinstance(substrate, torch.Tensor):
        if substrate.shape != images.shape:
            raise InputError(f"a substrate tensor must have the images' shape {tuple(images.shape)}, "
                             f"got {tuple(substrate.shape)}")
        return substrate.to(device=images.device, dtype=images.dtype)
    return SUBSTRATES.get(substrate)(images)
