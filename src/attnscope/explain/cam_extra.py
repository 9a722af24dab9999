"""More of the CAM family: Eigen-Grad-CAM, KPCA-CAM, Finer-CAM and Smooth Grad-CAM++.

Eigen-Grad-CAM and KPCA-CAM read the shared pass only; Finer-CAM differentiates another score (the
target against its most similar classes) and Smooth Grad-CAM++ the score at noisy inputs, so both
run their extra backward passes to the chosen layer through the `Oracle`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnscope.errors import InputError
from attnscope.explain.cam import SPATIAL, principal_projection, safe_div, weighted_sum
from attnscope.explain.context import Oracle
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.explain.sampled import MAX_POINTS
from attnscope.explain.targets import Target


@register_method("eigengradcam", "cam")
def eigengradcam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True, center: bool = True) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam; Eigen-CAM of Muhammad & Yeasin 2020 on A ⊙ ∂y/∂A): the (hw, C) matrix
    of A_k ⊙ g_k projected on its first principal direction (centred per channel), sign fixed by Σ_k V_1k ≥ 0."""
    projection = principal_projection(acts * grads, center)
    return projection.clamp_min(0) if relu else projection


def _sigmoid(x: torch.Tensor, gamma: float, coef0: float, _degree: int) -> torch.Tensor:
    return torch.tanh(gamma * x @ x.transpose(1, 2) + coef0)


def _rbf(x: torch.Tensor, gamma: float, _coef0: float, _degree: int) -> torch.Tensor:
    return torch.exp(-gamma * torch.cdist(x, x).square())


def _poly(x: torch.Tensor, gamma: float, coef0: float, degree: int) -> torch.Tensor:
    return (gamma * x @ x.transpose(1, 2) + coef0) ** degree


def _cosine(x: torch.Tensor, _gamma: float, _coef0: float, _degree: int) -> torch.Tensor:
    unit = x / x.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return unit @ unit.transpose(1, 2)


KERNELS: dict[str, Callable[[torch.Tensor, float, float, int], torch.Tensor]] = {
    "sigmoid": _sigmoid, "rbf": _rbf, "poly": _poly, "cosine": _cosine,
    "linear": lambda x, _g, _c, _d: x @ x.transpose(1, 2),
}


@register_method("kpcacam", "cam")
def kpcacam(acts: torch.Tensor, *, kernel: str = "sigmoid", gamma: float | None = None, coef0: float = 1.0,
            degree: int = 3, relu: bool = True) -> torch.Tensor:
    """KPCA-CAM (Karmani et al., 2024): the activations' positions (hw, C), centred per channel, projected on
    the first kernel principal component: √λ_1 u_1 of the doubly centred kernel matrix K (hw, hw).

    kernel: sigmoid tanh(γ xᵀy + c₀) (default, as pytorch-grad-cam), rbf exp(−γ‖x − y‖²), poly, cosine,
    linear (= Eigen-CAM on centred activations); γ = 1 / C when None (scikit-learn's default). The sign
    is fixed so that the component is positive where the activations sum highest.
    """
    if kernel not in KERNELS:
        raise InputError(f"kpcacam kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    n, c, h, w = acts.shape
    x = acts.flatten(2).transpose(1, 2).double()  # (N, hw, C)
    x = x - x.mean(dim=1, keepdim=True)
    k = KERNELS[kernel](x, 1.0 / c if gamma is None else gamma, coef0, degree)  # (N, hw, hw)
    k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(k)  # ascending
    component = vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()  # (N, hw)
    strongest = acts.flatten(2).sum(dim=1).argmax(dim=1)  # (N,) the position of most activation
    sign = torch.where(component.gather(1, strongest[:, None]) < 0, -1.0, 1.0)
    projection = (component * sign).view(n, h, w).to(acts.dtype)
    return projection.clamp_min(0) if relu else projection


def finer_scores(logits: torch.Tensor, classes: torch.Tensor, comparisons: int) -> torch.Tensor:
    """The `comparisons` classes (N, m) nearest each row's class in logit, |y_j − y_c|, the class itself left out."""
    gap = (logits - logits.gather(1, classes[:, None])).abs()
    gap = gap.scatter(1, classes[:, None], torch.inf)
    return gap.topk(min(comparisons, logits.shape[1] - 1), dim=1, largest=False).indices


def finer_target(classes: torch.Tensor, similar: torch.Tensor, alpha: float) -> Target:
    """Finer-CAM's score per row: Σ_j p_j (y_c − α y_j) / (Σ_j p_j + 1e-9), j the similar classes, p = softmax(y)."""

    def score(logits: torch.Tensor) -> torch.Tensor:
        p = logits.softmax(dim=1).gather(1, similar)  # (N, m)
        main = logits.gather(1, classes[:, None])  # (N, 1)
        return (p * (main - alpha * logits.gather(1, similar))).sum(dim=1) / (p.sum(dim=1) + 1e-9)

    return Target(classes, score)


@register_method("finercam", "cam")
def finercam(acts: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, oracle: Oracle, *,
             alpha: float = 1.0, comparisons: int = 3, relu: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """Finer-CAM (Zhang et al., CVPR 2025): Grad-CAM of the score Σ_j p_j (y_c − α y_j) / Σ_j p_j, j the
    `comparisons` classes whose logits are nearest y_c: what tells the class from its look-alikes.

    One more forward + backward to the layer (the shared pass differentiates y_c itself).
    """
    positive_int("comparisons", comparisons)
    if (classes < 0).any():
        raise InputError("finercam compares the target class with other classes; a callable target has none")
    target = finer_target(classes, finer_scores(logits, classes, comparisons), alpha)
    rows = torch.arange(acts.shape[0], device=acts.device)
    grads = oracle.layer_gradients(oracle.images[oracle.source.to(acts.device)], rows, target)
    return weighted_sum(acts, grads.mean(dim=SPATIAL), relu, eigen_smooth)


@register_method("smoothgradcam++", "cam")
def smoothgradcampp(acts: torch.Tensor, images: torch.Tensor, oracle: Oracle, *, n: int = 4, sigma: float = 0.3,
                    seed: int = 0, relu: bool = True, eps: float = 1e-8, eigen_smooth: bool = False) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ with the gradient powers averaged over n noisy inputs,
    w_k = Σ_ij α_ij ReLU(ḡ_ij), α = mean(g²) / (2 mean(g²) + Σ_ab A_ab · mean(g³) + eps), ḡ = mean(g).

    x + ε_j, ε_j ~ N(0, σ²) (absolute σ, as torchcam), the same n draws for every image (from `seed`);
    A is the clean image's activation. n more forward + backward passes to the layer.
    """
    positive_int("n", n, at_most=MAX_POINTS)
    if not sigma >= 0:
        raise InputError(f"sigma must be >= 0, got {sigma!r}")
    noise = sigma * torch.randn((n, *images.shape[1:]), generator=torch.Generator().manual_seed(seed))
    noise = noise.to(images)
    rows = torch.arange(images.shape[0], device=images.device)
    g1, g2, g3 = (torch.zeros_like(acts) for _ in range(3))
    for j in range(n):
        g = oracle.layer_gradients(images + noise[j], rows)
        g1, g2, g3 = g1 + g / n, g2 + g.pow(2) / n, g3 + g.pow(3) / n
    alpha = safe_div(g2, 2 * g2 + (acts.sum(dim=SPATIAL, keepdim=True) * g3) + eps)
    return weighted_sum(acts, (alpha * g1.clamp_min(0)).sum(dim=SPATIAL), relu, eigen_smooth)
