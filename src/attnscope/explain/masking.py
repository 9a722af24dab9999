"""Black-box maps from masked inputs: RISE (random masks) and extremal perturbation (an optimised mask).

RISE (Petsiuk et al., BMVC 2018) averages random smooth masks weighted by the score of the image
they mask; the masks go through the model `batch_size` at a time, under no_grad, and the K targets
of an image share them. Extremal perturbation (Fong et al., ICCV 2019) optimises, for every row at
once, the smooth mask of a given area whose preserved region keeps the score highest.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from attnscope.errors import InputError
from attnscope.explain.context import Oracle
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.explain.perturbation import folds, forward_probe
from attnscope.explain.targets import Target

RISE_SCORES = ("probability", "sigmoid", "logit")


def rise_masks(n: int, cells: int, p: float, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """n smooth random masks (n, H, W): a cells × cells grid of cells kept with probability p, upsampled
    bilinearly (reflect-padded at the border) to the image plus one cell c = ⌈H / cells⌉, cropped at a random
    shift in [0, c) — TorchRay's construction, from the same draws (grid, then the row and column shifts)."""
    height, width = size
    cell = (math.ceil(height / cells), math.ceil(width / cells))
    big = (height + cell[0], width + cell[1])  # the upsampled mask, one cell larger than the image
    inner = (math.ceil(big[0] / cells), math.ceil(big[1] / cells))  # its cells, with the reflected border
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < p).float()
    padded = F.pad(grid, (1, 1, 1, 1), mode="reflect")
    up = F.interpolate(padded, (inner[0] * (cells + 2), inner[1] * (cells + 2)), mode="bilinear",
                       align_corners=False)[:, 0, inner[0] : inner[0] + big[0], inner[1] : inner[1] + big[1]]
    dy = torch.randint(0, cell[0], (n,), generator=generator)
    dx = torch.randint(0, cell[1], (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]  # (n, H, 1)
    cols = (dx[:, None] + torch.arange(width))[:, None, :]  # (n, 1, W)
    return up[torch.arange(n)[:, None, None], rows, cols]


def _rise_score(target: Target, logits: torch.Tensor, how: str) -> torch.Tensor:
    if how == "probability" and target.fn is None:
        return logits.softmax(dim=1).gather(1, target.classes.to(logits.device)[:, None])[:, 0]
    if how == "sigmoid":
        return torch.sigmoid(target.score(logits))
    return target.score(logits)


@register_method("rise", "perturbation")
def rise(oracle: Oracle, *, n: int = 4000, cells: int = 7, p: float = 0.5, score: str = "probability", seed: int = 0,
         batch_size: int | None = None, draw: int = 64, channels_last: bool | str = "auto",
         fold_batchnorm: bool = False) -> torch.Tensor:
    """RISE (Petsiuk et al., BMVC 2018, Eq. 6): M = (1 / (n p)) Σ_i s(x ⊙ M_i) M_i over n random masks M_i.

    score: "probability" (the softmax of the target class, the paper's), "sigmoid" of the logit (TorchRay's),
    "logit"; a callable target gives its raw score (sigmoid'd for "sigmoid"). The masks come from `seed`,
    drawn `draw` at a time as TorchRay draws them (its batch_size), the same for every image and
    every `batch_size` (masks per forward; None: from the memory budget). `channels_last` and `fold_batchnorm` as
    for Score-CAM (`explain.perturbation`).
    """
    positive_int("n", n, at_most=100_000)
    positive_int("cells", cells)
    positive_int("draw", draw)
    if not 0 < p <= 1:
        raise InputError(f"rise p (the probability a cell is kept) must be in (0, 1], got {p!r}")
    if score not in RISE_SCORES:
        raise InputError(f"rise score must be one of {RISE_SCORES}, got {score!r}")
    x, k = oracle.images, oracle.per_image
    size = tuple(x.shape[-2:])
    gen = torch.Generator().manual_seed(seed)
    total = x.new_zeros(x.shape[0] * k, *size)
    fold = folds(n * x.shape[0], fold_batchnorm)
    channels_last, batch_size = oracle.plan(channels_last, batch_size, n * x.shape[0],
                                            lambda nhwc: forward_probe(oracle, nhwc, fold))
    batch_size = min(batch_size, draw)
    for start in range(0, n, draw):
        drawn = rise_masks(min(draw, n - start), cells, p, size, gen).to(x)  # (M, H, W)
        for i, s in itertools.product(range(x.shape[0]), range(0, len(drawn), batch_size)):
            masks = drawn[s : s + batch_size]
            logits = oracle.logits(x[i] * masks[:, None], channels_last, fold)
            for t in range(k):
                row = i * k + t
                weights = _rise_score(oracle.target.take(torch.full((len(masks),), row)), logits, score)
                total[row] += torch.einsum("m,mhw->hw", weights, masks)
    return total / (n * p)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect-padded; sigma in pixels."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    radius_h, radius_w = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)
    x = F.pad(x, (radius_w, radius_w, radius_h, radius_h), mode="reflect")
    kh, kw = kernel[radius - radius_h : radius + radius_h + 1], kernel[radius - radius_w : radius + radius_w + 1]
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def smooth_mask(params: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Mask parameters in [0, 1] at low resolution (N, 1, h, w) → a smooth mask (N, 1, H, W) in [0, 1]."""
    return gaussian_blur(F.interpolate(params, size, mode="bilinear", align_corners=False), sigma)  # convex: in [0, 1]


@register_method("extremal", "perturbation", differentiable=False)
def extremal(images: torch.Tensor, oracle: Oracle, *, area: float = 0.1, steps: int = 800, step: int = 7,
             sigma: float = 21.0, blur: float = 10.0, lr: float = 0.01, regul: float = 300.0,
             jitter: bool = True) -> torch.Tensor:
    """Extremal perturbation, preservation game (Fong et al., ICCV 2019, Eq. 5–7): the smooth mask m of area
    `area` maximising y(m ⊙ x + (1 − m) ⊙ blur(x)) − λ ‖sort(m) − r_a‖² / HW, r_a = 1 on the top area·HW pixels.

    m: parameters on a grid of one per `step` pixels, upsampled and Gaussian-smoothed (`sigma` px · H/224);
    blur σ = `blur` px · H/224. λ = `regul`, growing ×1.0035 per step as in TorchRay; SGD with momentum 0.9
    and the image flipped every other step (`jitter`). Rows are optimised together, each for its own target.
    """
    positive_int("steps", steps, at_most=100_000)
    positive_int("step", step)
    if not 0 < area < 1:
        raise InputError(f"extremal area must be in (0, 1), got {area!r}")
    x = images.detach()
    n, _, height, width = x.shape
    scale = height / 224
    blurred = gaussian_blur(x, blur * scale)
    params = torch.full((n, 1, math.ceil(height / step), math.ceil(width / step)), 0.5, dtype=x.dtype,
                        device=x.device, requires_grad=True)
    reference = torch.zeros(height * width, dtype=x.dtype, device=x.device)
    reference[: int(round(area * height * width))] = 1.0  # descending: the top `area` of the pixels preserved
    opt = torch.optim.SGD([params], lr=lr, momentum=0.9, dampening=0.9)
    rows = torch.arange(n, device=x.device)
    weight = regul
    for t in range(steps):
        with torch.enable_grad():
            mask = smooth_mask(params, (height, width), sigma * scale)  # (N, 1, H, W)
            perturbed = mask * x + (1 - mask) * blurred
            if jitter and t % 2 == 0:
                perturbed = perturbed.flip(-1)
            reward = oracle.target.take(rows).score(oracle.forward(perturbed))  # (N,)
            ranked = mask.flatten(1).sort(dim=1, descending=True).values
            penalty = weight * (ranked - reference).square().mean(dim=1)
            loss = (penalty - reward).sum()
            opt.zero_grad()
            loss.backward()
        opt.step()
        with torch.no_grad():
            params.clamp_(0, 1)
        weight *= 1.0035
    with torch.no_grad():
        return smooth_mask(params, (height, width), sigma * scale)[:, 0]
