"""Faithfulness of a map to the model: does what it marks as important change the model's score?

The metrics never see a model. They take a scorer `f(x, source) -> scores`: `x` (N, C, H, W) are
perturbed copies of the images, `source` (N,) long says which image of the batch each one comes
from (so `f` can score each for that image's class), and `scores` (N,) are the explained scores —
the class probability in the papers. `attnscope.sanity.leaderboard.class_probability` builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnscope.errors import InputError
from attnscope.maps import normalize
from attnscope.registry import Registry

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SUBSTRATES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("substrate")


@SUBSTRATES.register("zero")
def zero_substrate(images: torch.Tensor) -> torch.Tensor:
    """A black image: what RISE's deletion puts in place of removed pixels."""
    return torch.zeros_like(images)


@SUBSTRATES.register("blur")
def blur_substrate(images: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """A Gaussian blur (11 px kernel, σ = 5, zero padding) of each image: RISE's insertion start."""
    r = torch.arange(size, dtype=images.dtype, device=images.device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = images.shape[1]
    x = F.conv2d(images, g.view(1, 1, 1, size).expand(c, 1, 1, size), padding=(0, size // 2), groups=c)
    return F.conv2d(x, g.view(1, 1, size, 1).expand(c, 1, size, 1), padding=(size // 2, 0), groups=c)


def importance_order(maps: torch.Tensor) -> torch.Tensor:
    """Position (B, H·W) of each pixel when sorted by decreasing map value (ties: raster order)."""
    flat = maps.flatten(1)
    order = (-flat).argsort(dim=1, stable=True)
    ranks = torch.arange(flat.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _curve(f: Scorer, start: torch.Tensor, end: torch.Tensor, maps: torch.Tensor, step: int | None,
           batch_size: int) -> torch.Tensor:
    """Scores (B, S + 1) as the most important pixels pass from `start` to `end`, `step` pixels at a time."""
    b, c, h, w = start.shape
    step = w if step is None else step
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise InputError(f"pixels per step must be a positive integer, got {step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = math.ceil(h * w / step) + 1  # points on the curve, from 0 to all pixels moved
    position = importance_order(maps).view(b, 1, h, w)
    out = torch.empty(b * n, dtype=torch.float64)
    for lo in range(0, b * n, batch_size):
        flat = torch.arange(lo, min(lo + batch_size, b * n), device=start.device)
        i, k = flat // n, flat % n
        moved = position[i] < (k * step).clamp(max=h * w).view(-1, 1, 1, 1)  # (N, 1, H, W)
        x = torch.where(moved, end[i], start[i])  # (N, C, H, W)
        out[lo : lo + len(flat)] = _scores(f, x, i).double().cpu()
    return out.view(b, n)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under each curve (B, S + 1) over [0, 1] with equally spaced points (trapezoid rule, as RISE)."""
    n = curve.shape[1] - 1
    return (curve.sum(1) - curve[:, 0] / 2 - curve[:, -1] / 2) / n


def deletion_curve(f: Scorer, images: torch.Tensor, maps: torch.Tensor, substrate: str | torch.Tensor = "zero",
                   step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Scores (B, S + 1) while the most important pixels are replaced by `substrate`, `step` at a time."""
    _check(images, maps)
    return _curve(f, images, _substrate(substrate, images), maps, step, batch_size)


def insertion_curve(f: Scorer, images: torch.Tensor, maps: torch.Tensor, substrate: str | torch.Tensor = "blur",
                    step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Scores (B, S + 1) while the most important pixels are put back into `substrate`, `step` at a time."""
    _check(images, maps)
    return _curve(f, _substrate(substrate, images), images, maps, step, batch_size)


def deletion_auc(f: Scorer, images: torch.Tensor, maps: torch.Tensor, substrate: str | torch.Tensor = "zero",
                 step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Deletion AUC (Petsiuk et al., BMVC 2018, RISE): area under the score as the most important
    pixels are removed first; lower is better. `step` pixels per step (default: one image row). (B,)."""
    return auc(deletion_curve(f, images, maps, substrate, step, batch_size))


def insertion_auc(f: Scorer, images: torch.Tensor, maps: torch.Tensor, substrate: str | torch.Tensor = "blur",
                  step: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Insertion AUC (Petsiuk et al., BMVC 2018, RISE): area under the score as the most important
    pixels are inserted into a blurred image first; higher is better. (B,)."""
    return auc(insertion_curve(f, images, maps, substrate, step, batch_size))


def masked_scores(f: Scorer, images: torch.Tensor, maps: torch.Tensor,
                  batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O): the score of each image and of its explanation map E = norm(M) ⊙ x (Grad-CAM++), each (B,)."""
    _check(images, maps)
    explained = normalize(maps)[:, None].to(images.dtype) * images  # (B, C, H, W)
    b = images.shape[0]
    source = torch.arange(b, device=images.device)
    both = torch.cat([images, explained])
    scores = torch.cat([_scores(f, both[i : i + batch_size], torch.cat([source, source])[i : i + batch_size])
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


def average_drop(f: Scorer, images: torch.Tensor, maps: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Average Drop (Grad-CAM++): max(0, Y − O) / Y per image; its mean × 100 is the paper's %. (B,)."""
    return drop(*masked_scores(f, images, maps, batch_size))


def increase_in_confidence(f: Scorer, images: torch.Tensor, maps: torch.Tensor,
                           batch_size: int = 256) -> torch.Tensor:
    """Increase in Confidence (Grad-CAM++): 1[Y < O] per image; its mean × 100 is the paper's %. (B,)."""
    return increase(*masked_scores(f, images, maps, batch_size))


def _scores(f: Scorer, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        s = f(x, source)
    if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0],):
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise InputError(f"the scorer must return scores ({x.shape[0]},) for {x.shape[0]} inputs, got {shape}")
    if not torch.isfinite(s).all():
        raise InputError("the scorer returned NaN or infinite scores")
    return s


def _substrate(substrate: str | torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    if isinstance(substrate, torch.Tensor):
        if substrate.shape != images.shape:
            raise InputError(f"a substrate tensor must have the images' shape {tuple(images.shape)}, "
                             f"got {tuple(substrate.shape)}")
        return substrate.to(device=images.device, dtype=images.dtype)
    return SUBSTRATES.get(substrate)(images)


def _check(images: torch.Tensor, maps: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a float tensor (B, C, H, W), got {shape}")
    if not isinstance(maps, torch.Tensor) or maps.shape != (images.shape[0], *images.shape[-2:]):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise InputError(f"maps must be (B, H, W) = {(images.shape[0], *images.shape[-2:])}, got {shape}")
    if not torch.isfinite(maps).all() or not torch.isfinite(images).all():
        raise InputError("images or maps contain NaN or infinite values")
