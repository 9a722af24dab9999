"""Gradient methods: maps from d score / d input, summed or maxed over colour channels."""

from __future__ import annotations

import torch

from attnscope.explain.api import Context, register_method


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, H, W) attributions → (B, H, W): "sum" keeps the sign, "abs-max" is Simonyan's map."""
    if how == "sum":
        return attr.sum(dim=1)
    if how == "abs-max":
        return attr.abs().amax(dim=1)
    raise ValueError(f"channel reduction must be 'sum' or 'abs-max', got {how!r}")


@register_method("saliency", "gradient", needs={"input_grad"})
def saliency(ctx: Context, reduce: str = "abs-max") -> torch.Tensor:
    """Saliency (Simonyan et al., ICLR-W 2014): M_ij = max_c |∂y/∂x_cij|."""
    return reduce_channels(ctx.capture.input_grad, reduce)
