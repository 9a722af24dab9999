"""Gradient methods: maps from d score / d input, reduced over colour channels.

Saliency and input × gradient read the input gradient of the shared pass; Guided Backprop and
Guided Grad-CAM read its guided input gradient (a second backward over the same forward).
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.cam import gradcam
from attnscope.explain.method import register_method
from attnscope.maps import upsample

REDUCTIONS = ("sum", "abs-sum", "abs-max", "square-sum")


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """(N, C, H, W) attributions → (N, H, W): "sum" keeps the sign; "abs-sum"; "abs-max" is Simonyan's map;
    "square-sum" is Σ_c a², the per-pixel energy that Right for the Right Reasons penalises."""
    if how == "sum":
        return attr.sum(dim=1)
    if how == "abs-sum":
        return attr.abs().sum(dim=1)
    if how == "abs-max":
        return attr.abs().amax(dim=1)
    if how == "square-sum":
        return attr.square().sum(dim=1)
    raise InputError(f"channel reduction must be one of {REDUCTIONS}, got {how!r}")


def _has_relu(model: nn.Module) -> str | None:
    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        return None
    return "guided backpropagation rewrites the backward of nn.ReLU modules and this model has none"


@register_method("saliency", "gradient")
def saliency(input_grad: torch.Tensor, *, reduce: str = "abs-max") -> torch.Tensor:
    """Saliency (Simonyan et al., ICLR-W 2014): M_ij = max_c |∂y/∂x_cij|."""
    return reduce_channels(input_grad, reduce)


@register_method("inputxgrad", "gradient")
def inputxgrad(images: torch.Tensor, input_grad: torch.Tensor, *, reduce: str = "sum") -> torch.Tensor:
    """Input × gradient (Shrikumar et al., 2016, arXiv:1605.01713): M_ij = Σ_c x_cij ∂y/∂x_cij."""
    return reduce_channels(images * input_grad, reduce)


@register_method("guided-backprop", "gradient", applies=_has_relu)
def guided_backprop(guided_grad: torch.Tensor, *, reduce: str = "sum") -> torch.Tensor:
    """Guided Backpropagation (Springenberg et al., ICLR-W 2015): ∂y/∂x with each ReLU's backward
    replaced by R_in = 1[x > 0] · 1[R_out > 0] · R_out.

    Only `nn.ReLU` modules are rewritten (as in captum): a ReLU applied functionally in `forward`
    (F.relu, torch.relu, Tensor.relu) keeps its plain gradient, and so do other activations.
    """
    return reduce_channels(guided_grad, reduce)


def guided_gradcam_attributions(acts: torch.Tensor, grads: torch.Tensor, guided_grad: torch.Tensor) -> torch.Tensor:
    """Guided Backprop (N, C, H, W) times Grad-CAM (ReLU'd) upsampled bilinearly to the input."""
    cam = upsample(gradcam(acts, grads, relu=True), tuple(guided_grad.shape[-2:]))  # (N, H, W)
    return guided_grad * cam[:, None]


@register_method("guided-gradcam", "gradient", applies=_has_relu)
def guided_gradcam(acts: torch.Tensor, grads: torch.Tensor, guided_grad: torch.Tensor, *,
                   reduce: str = "sum") -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): Guided Backprop ⊙ bilinear-upsampled Grad-CAM.

    Shares the forward pass with Grad-CAM and Guided Backprop. captum's GuidedGradCam upsamples
    with "nearest" by default; with interpolate_mode="bilinear" it computes the same map.
    """
    return reduce_channels(guided_gradcam_attributions(acts, grads, guided_grad), reduce)
