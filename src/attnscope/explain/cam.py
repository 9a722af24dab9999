"""The CAM family: a map is a weighted sum of the chosen layer's channels; methods differ in the weights.

Each method is a pure function of what the shared pass captured — activations A (N, C, h, w)
and their gradients G = ∂y/∂A, one row per (image, target) — returning the map at the layer's
resolution (N, h, w); `explain` upsamples it bilinearly to the input. All gradient CAMs asked
together read the same pass. Adding one is one decorated function here (docs/architecture.md).
The final ReLU is a parameter (`relu`), defaulting to each paper's choice; nothing is normalised.
Every CAM has the option `eigen_smooth` (the first principal component of the weighted channels).
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import NotApplicableError
from attnscope.explain.context import classifier
from attnscope.explain.method import register_method

SPATIAL = (2, 3)


def weighted_sum(acts: torch.Tensor, weights: torch.Tensor, relu: bool, eigen_smooth: bool = False) -> torch.Tensor:
    """Σ_k w_k A_k for weights (B, C) or (B, C, h, w); then ReLU if asked. Returns (B, h, w).

    `eigen_smooth`: the first principal component of the weighted channels w_k A_k instead of their
    sum (pytorch-grad-cam's eigen-smooth), its sign chosen to agree with the sum.
    """
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    weighted = weights * acts  # (B, C, h, w)
    cam = weighted.sum(dim=1)
    if eigen_smooth:
        projection = principal_projection(weighted, center=True)
        agree = (projection * cam).sum(dim=(1, 2), keepdim=True) >= 0
        cam = torch.where(agree, projection, -projection)
    return cam.clamp_min(0) if relu else cam


def principal_projection(x: torch.Tensor, center: bool) -> torch.Tensor:
    """(B, C, h, w) channels as an (hw, C) matrix per image, projected on its first right singular vector.

    The sign is fixed so that Σ_k V_1k ≥ 0. `center`: subtract each channel's mean over positions first.
    """
    b, _, h, w = x.shape
    flat = x.flatten(2).transpose(1, 2)  # (B, hw, C)
    if center:
        flat = flat - flat.mean(dim=1, keepdim=True)
    v = torch.linalg.svd(flat, full_matrices=False).Vh[:, 0]  # (B, C)
    v = v * torch.where(v.sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    return (flat @ v[:, :, None])[:, :, 0].view(b, h, w)


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den == 0 (a term with nothing to weigh contributes nothing)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


def _has_classifier(model: nn.Module) -> str | None:
    return None if classifier(model) is not None else "CAM needs a global-average-pool + linear head"


@register_method("cam", "cam", applies=_has_classifier)
def cam(acts: torch.Tensor, class_weights: torch.Tensor, class_bias: torch.Tensor, scores: torch.Tensor,
        layer_name: str, *, relu: bool = False, check_head: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """CAM (Zhou et al., CVPR 2016): M_c = Σ_k w_ck A_k, w the linear head after global average pooling.

    CAM is exact only when the logit is that head applied to the layer's global average:
    y_c = mean_ij M_c,ij + b_c. `check_head=True` verifies this on the batch and raises otherwise
    (e.g. a ViT, whose head reads the CLS token; DenseNet, which applies a ReLU after `features`);
    `check_head=False` computes the map anyway.
    """
    if class_weights.shape[1] != acts.shape[1]:
        raise NotApplicableError(
            f"CAM needs the layer's {acts.shape[1]} channels to feed the linear head directly "
            f"(global average pooling + linear); this model's head takes {class_weights.shape[1]}"
        )
    maps = weighted_sum(acts, class_weights, relu=False)  # (N, h, w)
    if check_head:
        implied = maps.mean(dim=(1, 2)) + class_bias  # (N,) the logit a GAP + linear head would give
        if not torch.allclose(implied, scores, rtol=1e-3, atol=1e-3):
            raise NotApplicableError(
                f"CAM: the logits are not the linear head applied to the global average of layer "
                f"{layer_name!r} (off by up to {float((implied - scores).abs().max()):.3g}); "
                "choose the layer that feeds global average pooling, or pass check_head=False"
            )
    if eigen_smooth:
        return weighted_sum(acts, class_weights, relu, eigen_smooth=True)
    return maps.clamp_min(0) if relu else maps


@register_method("gradcam", "cam")
def gradcam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ReLU(Σ_k α_k A_k), α_k = mean_{ij} ∂y/∂A_k,ij."""
    return weighted_sum(acts, grads.mean(dim=SPATIAL), relu, eigen_smooth)


@register_method("gradcam++", "cam")
def gradcam_pp(acts: torch.Tensor, grads: torch.Tensor, scores: torch.Tensor, *, relu: bool = True,
               exp_score: bool = False, eps: float = 0.0, eigen_smooth: bool = False) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, Eq. 19): ReLU(Σ_k w_k A_k) with

    w_k = Σ_ij α_k,ij ReLU(g_k,ij),  α_k,ij = g² / (2 g² + Σ_ab A_k,ab · g³),  g = ∂y/∂A_k,ij.

    The paper differentiates Y = exp(y); the exp(y) factors cancel in α and leave w scaled by
    exp(y), a positive per-image constant: `exp_score=True` applies it (the paper's raw scale;
    it overflows for logits above ~88), the default leaves it out. α is 0 where its denominator
    is 0. `eps` is added to the denominator: pytorch-grad-cam adds 1e-6, which is not negligible
    when gradients are small (g² ≪ 1e-6), so its maps differ from the formula unless eps=1e-6 here.
    """
    g = grads
    g2 = g * g
    alpha = safe_div(g2, 2 * g2 + acts.sum(dim=SPATIAL, keepdim=True) * g2 * g + eps)
    weights = (alpha * g.clamp_min(0)).sum(dim=SPATIAL)  # (B, C)
    if exp_score:
        weights = weights * scores.exp()[:, None]
    return weighted_sum(acts, weights, relu, eigen_smooth)


@register_method("xgradcam", "cam")
def xgradcam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020): ReLU(Σ_k w_k A_k), w_k = Σ_ij (A_k,ij / Σ_ab A_k,ab) ∂y/∂A_k,ij.

    A channel whose activations sum to 0 gets weight 0 (pytorch-grad-cam divides by the sum + 1e-7).
    """
    weights = safe_div((acts * grads).sum(dim=SPATIAL), acts.sum(dim=SPATIAL))  # (N, C)
    return weighted_sum(acts, weights, relu, eigen_smooth)


@register_method("hirescam", "cam")
def hirescam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020): ReLU(Σ_k ∂y/∂A_k ⊙ A_k), the gradient kept per position.

    relu=True as in the Grad-CAM family; relu=False gives the signed map.
    """
    return weighted_sum(acts, grads, relu, eigen_smooth)


@register_method("layercam", "cam")
def layercam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True, eigen_smooth: bool = False) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021, Eq. 4–5): ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k)."""
    return weighted_sum(acts, grads.clamp_min(0), relu, eigen_smooth)


@register_method("eigencam", "cam")
def eigencam(acts: torch.Tensor, *, relu: bool = False, center: bool = False) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): M = A V_1, A the (hw, C) activations, V_1 their
    first right singular vector (first principal direction). Class-agnostic: no target is used.

    The sign of V_1 is not defined by the SVD; we fix it so that Σ_k V_1k ≥ 0 (the direction of
    more activation), where pytorch-grad-cam leaves it to the SVD routine. `center=True` subtracts
    each channel's mean over positions first, as pytorch-grad-cam does; the paper does not.
    """
    projection = principal_projection(acts, center)  # (N, h, w)
    return projection.clamp_min(0) if relu else projection
