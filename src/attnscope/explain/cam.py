"""The CAM family: a map is a weighted sum of the chosen layer's channels; methods differ in the weights.

Each method is a small function of what the shared pass captured (activations A (B, C, h, w),
their gradients G = dy/dA); `weighted_sum` does the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import NotApplicableError
from attnscope.explain.api import Context, register_method


def weighted_sum(acts: torch.Tensor, weights: torch.Tensor, relu: bool) -> torch.Tensor:
    """Σ_k w_k A_k for weights (B, C) or (B, C, h, w); then ReLU if asked. Returns (B, h, w)."""
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    cam = (weights * acts).sum(dim=1)
    return cam.clamp_min(0) if relu else cam


def classifier(model: nn.Module) -> nn.Linear | None:
    """The linear layer a CAM reads: `model.cam_classifier` if declared, else the last nn.Linear."""
    declared = getattr(model, "cam_classifier", None)
    if declared is not None:
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _has_classifier(model: nn.Module) -> str | None:
    return None if classifier(model) is not None else "CAM needs a global-average-pool + linear head"


@register_method("cam", "cam", needs={"layer"}, applies=_has_classifier)
def cam(ctx: Context, relu: bool = False) -> torch.Tensor:
    """CAM (Zhou et al., CVPR 2016): M_c = Σ_k w_ck A_k, w the linear head after global average pooling."""
    acts, fc = ctx.capture.activations, classifier(ctx.model)
    if fc is None or fc.in_features != acts.shape[1]:
        raise NotApplicableError(
            f"CAM needs the layer's {acts.shape[1]} channels to feed the linear head directly "
            f"(global average pooling + linear); this model's head takes {getattr(fc, 'in_features', None)}"
        )
    if ctx.target.fn is not None:
        raise NotApplicableError("CAM explains a class; a callable target has no class weights")
    weights = fc.weight.detach()[ctx.target.classes]  # (B, C)
    return weighted_sum(acts, weights, relu)


@register_method("gradcam", "cam", needs={"layer", "layer_grad"})
def gradcam(ctx: Context, relu: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ReLU(Σ_k α_k A_k), α_k = mean_{ij} ∂y/∂A_k,ij."""
    cap = ctx.capture
    return weighted_sum(cap.activations, cap.gradients.mean(dim=(2, 3)), relu)
