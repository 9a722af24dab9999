"""Gradient methods: maps from d score / d input, reduced over colour channels.

Saliency and input × gradient read the input gradient of the shared pass; Guided Backprop and
Guided Grad-CAM read its guided input gradient (a second backward over the same forward).
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.api import Context, register_method
from attnscope.explain.cam import gradcam
from attnscope.maps import upsample

REDUCTIONS = ("sum", "abs-sum", "abs-max")


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, H, W) attributions → (B, H, W): "sum" keeps the sign; "abs-sum"; "abs-max" is Simonyan's map."""
    if how == "sum":
        return attr.sum(dim=1)
    if how == "abs-sum":
        return attr.abs().sum(dim=1)
    if how == "abs-max":
        return attr.abs().amax(dim=1)
    raise InputError(f"channel reduction must be one of {REDUCTIONS}, got {how!r}")


def _has_relu(model: nn.Module) -> str | None:
    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        return None
    return "guided backpropagation rewrites the backward of nn.ReLU modules and this model has none"


@register_method("saliency", "gradient", needs={"input_grad"})
def saliency(ctx: Context, reduce: str = "abs-max") -> torch.Tensor:
    """Saliency (Simonyan et al., ICLR-W 2014): M_ij = max_c |∂y/∂x_cij|."""
    return reduce_channels(ctx.capture.input_grad, reduce)


@register_method("inputxgrad", "gradient", needs={"input_grad"})
def inputxgrad(ctx: Context, reduce: str = "sum") -> torch.Tensor:
    """Input × gradient (Shrikumar et al., 2016, arXiv:1605.01713): M_ij = Σ_c x_cij ∂y/∂x_cij."""
    return reduce_channels(ctx.images * ctx.capture.input_grad, reduce)


@register_method("guided-backprop", "gradient", needs={"guided_grad"}, applies=_has_relu)
def guided_backprop(ctx: Context, reduce: str = "sum") -> torch.Tensor:
    """Guided Backpropagation (Springenberg et al., ICLR-W 2015): ∂y/∂x with each ReLU's backward
    replaced by R_in = 1[x > 0] · 1[R_out > 0] · R_out.

    Only `nn.ReLU` modules are rewritten (as in captum): a ReLU applied functionally in `forward`
    (F.relu, torch.relu, Tensor.relu) keeps its plain gradient, and so do other activations.
    """
    return reduce_channels(ctx.capture.guided_grad, reduce)


def guided_gradcam_attributions(ctx: Context) -> torch.Tensor:
    """Guided Backprop (B, C, H, W) times Grad-CAM (ReLU'd) upsampled bilinearly to the input."""
    cam = upsample(gradcam(ctx, relu=True), ctx.size)  # (B, H, W)
    return ctx.capture.guided_grad * cam[:, None]


@register_method(
    "guided-gradcam", "gradient", needs={"layer", "layer_grad", "guided_grad"}, applies=_has_relu
)
def guided_gradcam(ctx: Context, reduce: str = "sum") -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): Guided Backprop ⊙ bilinear-upsampled Grad-CAM.

    Shares the forward pass with Grad-CAM and Guided Backprop. captum's GuidedGradCam upsamples
    with "nearest" by default; with interpolate_mode="bilinear" it computes the same map.
    """
    return reduce_channels(guided_gradcam_attributions(ctx), reduce)
