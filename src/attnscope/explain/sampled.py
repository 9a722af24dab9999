"""Methods that average input gradients over many inputs per image: SmoothGrad and Integrated Gradients.

Both are `path_sum`: Σ_j c_j ∂y/∂x at points p(i, j), computed in row-major chunks of
`batch_size` inputs through the `Oracle` (None: as many as fit the memory budget, `explain.budget`).
Each row's points depend only on its image (and the seed), so a batch gives the same maps as its images one by one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attnscope.errors import InputError
from attnscope.explain.budget import Probe
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.options import baseline_like, positive_int

MAX_POINTS = 100_000  # path points / noise draws per image: beyond this a setting is refused, not run for days


def gradient_probe(oracle: Oracle, channels_last: bool | str = False, kind: str = "input-gradients") -> Probe:
    """Chunks of input gradients timed on copies of the first image (row 0's target), in the passes' layout."""
    nhwc = oracle.channels_last(channels_last)
    x = oracle.images[:1]

    def run(n: int) -> object:
        rows = torch.zeros(n, dtype=torch.long, device=x.device)
        return oracle.input_gradients(x.expand(n, *x.shape[1:]).clone(), rows, channels_last=channels_last)

    return Probe(f"{kind}-{'nhwc' if nhwc else 'nchw'}", run)


def path_sum(
    oracle: Oracle,
    images: torch.Tensor,
    points: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    coeffs: torch.Tensor,
    batch_size: int,
    channels_last: bool | str = False,
) -> torch.Tensor:
    """Σ_j coeffs[j] · ∂y/∂x (points(i, j)) for every row i of `images` (N, C, H, W); returns (N, C, H, W).

    `points(i, j)` maps row indices (M,) and step indices (M,) to inputs (M, C, H, W); `channels_last`: the
    layout of their passes (`Oracle.input_gradients`).
    """
    b, n = images.shape[0], coeffs.shape[0]
    coeffs = coeffs.to(device=images.device, dtype=images.dtype)
    total = torch.zeros_like(images)
    for start in range(0, b * n, batch_size):
        flat = torch.arange(start, min(start + batch_size, b * n), device=images.device)
        i, j = flat // n, flat % n
        grads = oracle.input_gradients(points(i, j), i, channels_last=channels_last)  # (M, C, H, W)
        total.index_add_(0, i, grads * coeffs[j].view(-1, 1, 1, 1))
    return total


@register_method("smoothgrad", "gradient")
def smoothgrad(
    images: torch.Tensor,
    oracle: Oracle,
    *,
    n: int = 50,
    sigma: float = 0.15,
    seed: int = 0,
    reduce: str = "abs-max",
    batch_size: int | None = None,
    channels_last: bool | str = "auto",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017, arXiv:1706.03825): reduce((1/n) Σ_j ∂y/∂x (x + ε_j)),
    ε_j ~ N(0, σ_x²), σ_x = sigma · (max(x) − min(x)) per image (the paper's noise level).

    The n noise draws come from `seed` and are the same for every image of a batch, so maps are
    reproducible and do not depend on the batch an image is in. The gradient is averaged before
    the channel reduction (abs-max, as saliency), as in the paper's M̂ = mean of M. `channels_last`: the
    passes' layout ("auto": NHWC for a model that declares `prefers_channels_last`, `Oracle.channels_last`).
    """
    positive_int("n", n, at_most=MAX_POINTS)
    channels_last, batch_size = oracle.plan(channels_last, batch_size, images.shape[0] * n,
                                            lambda nhwc: gradient_probe(oracle, nhwc), grad=True)
    if not sigma >= 0:
        raise InputError(f"sigma must be >= 0 (a fraction of each image's value range), got {sigma!r}")
    x = images
    noise = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))  # (n, C, H, W)
    noise = noise.to(device=x.device, dtype=x.dtype)
    scale = sigma * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))  # (B,)
    points = lambda i, j: x[i] + scale[i].view(-1, 1, 1, 1) * noise[j]
    mean = path_sum(oracle, x, points, torch.full((n,), 1.0 / n), batch_size, channels_last)
    return reduce_channels(mean, reduce)


def path_rule(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points α_j ∈ [0, 1] and weights w_j (Σ w_j = 1) approximating ∫_0^1 f(α) dα ≈ Σ_j w_j f(α_j)."""
    positive_int("steps", steps, at_most=MAX_POINTS)
    k = np.arange(steps, dtype=np.float64)
    if rule == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    elif rule == "riemann-trapezoid":
        if steps < 2:
            raise InputError("the trapezoid rule needs steps >= 2")
        alphas, weights = k / (steps - 1), np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
    elif rule in ("riemann-left", "riemann-right", "riemann-middle"):
        shift = {"riemann-left": 0.0, "riemann-right": 1.0, "riemann-middle": 0.5}[rule]
        alphas, weights = (k + shift) / steps, np.full(steps, 1.0 / steps)
    else:
        known = "gauss-legendre, riemann-left, riemann-right, riemann-middle, riemann-trapezoid"
        raise InputError(f"unknown integration rule {rule!r}; known: {known}")
    return torch.from_numpy(alphas), torch.from_numpy(weights)


@register_method("ig", "gradient")
def integrated_gradients(
    images: torch.Tensor,
    classes: torch.Tensor,
    oracle: Oracle,
    *,
    steps: int = 50,
    baseline: float | torch.Tensor = 0.0,
    rule: str = "gauss-legendre",
    batch_size: int | None = None,
    reduce: str = "sum",
    channels_last: bool | str = "auto",
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., ICML 2017, Eq. 1):
    IG_i = (x_i − x'_i) · ∫_0^1 ∂y/∂x_i (x' + α (x − x')) dα, summed over channels by default.

    Completeness: Σ IG = y(x) − y(x') up to the quadrature error. The paper uses a Riemann sum
    (rule="riemann-right"); the default Gauss–Legendre rule (as captum's default) is more accurate
    for the same number of steps. `batch_size` is the number of path points per backward (None: from
    the memory budget); `channels_last` the passes' layout, as SmoothGrad's. A rule with the point α = 0
    and one baseline for every image (a number, or one (C, H, W) tensor) differentiates that point once
    per explained class, not once per row: it is the same input with the same target.
    """
    x = images
    base = baseline_like(baseline, x)
    alphas, weights = path_rule(rule, steps)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    shared = _shared_start(baseline, classes, alphas)
    first = int(shared)  # the path points left to each row: alphas[first:]
    channels_last, batch_size = oracle.plan(channels_last, batch_size, x.shape[0] * (steps - first),
                                            lambda nhwc: gradient_probe(oracle, nhwc), grad=True)
    points = lambda i, j: base[i] + alphas[j + first].view(-1, 1, 1, 1) * (x[i] - base[i])
    total = path_sum(oracle, x, points, weights[first:], batch_size, channels_last)
    if shared:
        kinds, row_kind = torch.unique(classes, return_inverse=True)
        one = torch.empty_like(kinds).scatter_reduce_(0, row_kind, torch.arange(len(classes), device=classes.device),
                                                      "amin", include_self=False)  # the first row of each class
        start = oracle.input_gradients(base[one], one, channels_last=channels_last)
        total = total + float(weights[0]) * start[row_kind]
    return reduce_channels((x - base) * total, reduce)


def _shared_start(baseline: float | torch.Tensor, classes: torch.Tensor, alphas: torch.Tensor) -> bool:
    """Whether the point α = 0 is one input for every row of a class: the rule has it, the baseline is
    one for all images, and the targets are classes (not a callable)."""
    one_baseline = not isinstance(baseline, torch.Tensor) or baseline.dim() <= 3
    return bool(alphas[0] == 0) and one_baseline and bool((classes >= 0).all()) and len(alphas) > 1
