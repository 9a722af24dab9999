"""ROAD, RemOve And Debias (Rong et al., ICML 2022): remove pixels by noisy linear imputation, so
that the shape of what was removed does not leak the class, and score the model as more are removed.

The imputation gives each removed pixel the weighted mean of its 8 neighbours (1/6 for the four
direct ones, 1/12 for the diagonals; neighbours outside the image are left out), removed neighbours
included, which couples all removed pixels in one sparse linear system per image and channel:

    S_p v_p − Σ_{q ∈ N(p), q removed} w_pq v_q = Σ_{q ∈ N(p), q kept} w_pq x_q,   S_p = Σ_{q ∈ N(p)} w_pq,

then adds N(0, noise²) to every imputed value. The system is symmetric positive definite (a grid
Laplacian with the kept pixels as boundary values); it is solved here for a whole batch at once by
conjugate gradients preconditioned with 1/S, its matrix applied as a 3×3 convolution, in float32
with one refinement against the float64 residual — the same solution as the reference code's sparse
direct solve (tested against Quantus to 1e-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from attnscope.errors import InputError
from attnscope.metrics.checks import check_images, positive_int, scored
from attnscope.metrics.declare import declare
from attnscope.metrics.faithfulness import ORDERS, Scorer, importance_order, scores_of

PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the paper's removal levels (%)


def neighbour_kernel(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 3×3 weights of the imputation: 1/6 for the direct neighbours, 1/12 for the diagonal ones."""
    d, s = 1 / 12, 1 / 6
    return torch.tensor([[d, s, d], [s, 0.0, s], [d, s, d]], dtype=dtype, device=device)


def neighbour_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ_q w_pq t_q over the 8 neighbours q of every pixel p of (N, 1, H, W), outside ones counting 0
    (the 3×3 weights `neighbour_kernel()`, zero padding): (direct sum)/6 + (diagonal sum)/12 of shifted
    views — on a CPU 3.7× faster than the one-channel 3×3 `conv2d` in float32 (bench/README.md, floor)."""
    h, w = t.shape[-2:]
    p = F.pad(t, (1, 1, 1, 1))
    at = lambda dy, dx: p[..., 1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]  # noqa: E731  the neighbour at (dy, dx)
    direct = at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1)
    diagonal = at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1)
    return direct / 6 + diagonal / 12


def impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None,
           tol: float = 1e-7, max_iter: int = 10_000) -> torch.Tensor:
    """`images` (N, C, H, W) with the pixels of `removed` (N, H, W) bool replaced by their noisy
    linear imputation (module docstring). Solved in float32 and refined once against the float64
    residual, to a relative residual `tol`."""
    n, c, h, w = images.shape
    if removed.shape != (n, h, w) or removed.dtype != torch.bool:
        raise InputError(f"removed must be bool (N, H, W) = {(n, h, w)}, got {removed.dtype} {tuple(removed.shape)}")
    x = images.double().reshape(n * c, 1, h, w)
    m = removed.to(images.device).double().repeat_interleave(c, 0)[:, None]  # (N·C, 1, H, W)
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device=images.device)
    s = neighbour_sum(ones)  # (1, 1, H, W) weight of the neighbours inside the image
    b = m * neighbour_sum((1 - m) * x)
    m32, s32 = m.float(), s.float()
    fast = lambda t: m32 * (s32 * t - neighbour_sum(m32 * t))  # noqa: E731  the operator in float32
    exact = lambda t: m * (s * t - neighbour_sum(m * t))  # noqa: E731  and in float64
    v = _solve(fast, b.float(), m32 / s32, 1e-5, max_iter).double()
    r = b - exact(v)  # one refinement: the float32 solution's error, solved again
    scale = b.square().sum((1, 2, 3)).sqrt().clamp_min(1e-300)
    if bool((r.square().sum((1, 2, 3)).sqrt() > tol * scale).any()):
        rel = tol * scale.view(-1, 1, 1, 1) / r.square().sum((1, 2, 3), keepdim=True).sqrt().clamp_min(1e-300)
        v = v + _solve(fast, r.float(), m32 / s32, float(rel.clamp(1e-6, 1).min()), max_iter).double()
    if noise:
        v = v + noise * torch.randn(v.shape, generator=generator, dtype=torch.float64).to(v.device)
    out = torch.where(m > 0, v, x)
    return out.view(n, c, h, w).to(images.dtype)


def _solve(apply, b: torch.Tensor, inverse_diag: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Preconditioned conjugate gradients for the batch of SPD systems `apply(v) = b` (one per row),
    to a relative residual `tol` in every row."""
    dims = tuple(range(1, b.dim()))
    tiny = torch.finfo(b.dtype).tiny
    v = inverse_diag * b
    r = b - apply(v)
    z = inverse_diag * r
    p = z.clone()
    rz = (r * z).sum(dims, keepdim=True)
    bound = tol * b.square().sum(dims, keepdim=True).sqrt()
    for _ in range(max_iter):
        if bool((r.square().sum(dims, keepdim=True).sqrt() <= bound).all()):
            return v
        ap = apply(p)
        alpha = rz / (p * ap).sum(dims, keepdim=True).clamp_min(tiny)
        v = v + alpha * p
        r = r - alpha * ap
        z = inverse_diag * r
        rz_new = (r * z).sum(dims, keepdim=True)
        p = z + (rz_new / rz.clamp_min(tiny)) * p
        rz = rz_new
    raise InputError(f"the imputation did not converge in {max_iter} iterations")  # pragma: no cover


def _road(order: str):
    """The ROAD column of one removal order: the AUC of the accuracy curve, 64 imputed images per forward."""
    return lambda m, b: road_auc(road_curve(m, b.images, b.correct, order=order, seed=b.seed, batch_size=64))


@declare("road_morf", "faithfulness", _road("morf"), higher_is_better=False, default=False, seeded=True, model=True,
         short="roadM", legend="ROAD, most relevant first", bounds=(0, 1))
@declare("road_lerf", "faithfulness", _road("lerf"), default=False, seeded=True, model=True, short="roadL",
         legend="ROAD, least relevant first", bounds=(0, 1))
@scored
def road_curve(maps: torch.Tensor, images: torch.Tensor, f: Scorer, percentages: Sequence[float] = PERCENTAGES,
               order: str = "morf", noise: float = 0.01, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """ROAD (Rong et al., ICML 2022): scores (B, P) after imputing the int(H·W·p/100) most ("morf") or
    least ("lerf") relevant pixels for each p in `percentages`. The paper scores with the accuracy
    (`attnscope.evaluate.correct_class`): MoRF should fall fast, LeRF stay high. `seed` draws the noise."""
    check_images(images, maps)
    positive_int("batch_size", batch_size)
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    if not percentages or not all(0 <= float(p) <= 100 for p in percentages):
        raise InputError(f"percentages must lie in [0, 100], got {list(percentages)!r}")
    if not noise >= 0:
        raise InputError(f"noise must be >= 0, got {noise!r}")
    b, h, w = maps.shape
    rank = importance_order(maps if order == "morf" else -maps).view(b, h, w)
    counts = torch.tensor([int(h * w * float(p) / 100) for p in percentages], device=maps.device)
    gen = torch.Generator().manual_seed(seed)
    n = len(counts)
    out = torch.empty(b * n, dtype=torch.float64)
    for lo in range(0, b * n, batch_size):  # level-major: a batch's systems take similar numbers of iterations
        flat = torch.arange(lo, min(lo + batch_size, b * n), device=maps.device)
        k, i = flat // b, flat % b
        x = impute(images[i], rank[i] < counts[k].view(-1, 1, 1), noise, gen)
        out[(i * n + k).cpu()] = scores_of(f, x, i).double().cpu()
    return out.view(b, n)


def road_auc(curve: torch.Tensor, percentages: Sequence[float] = PERCENTAGES) -> torch.Tensor:
    """Mean height of each ROAD curve (B, P) over its removal levels (trapezoid rule on the levels'
    spacing; one level: its value). MoRF: lower is better; LeRF: higher is better. (B,)."""
    p = torch.as_tensor([float(v) for v in percentages], dtype=torch.float64)
    if p.numel() == 1:
        return curve[:, 0].double()
    return torch.trapezoid(curve.double(), p, dim=1) / (p[-1] - p[0])
