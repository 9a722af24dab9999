"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the input-gradient plus the bias-gradients of every layer.

The bias-gradients of all Conv2d / BatchNorm2d layers come from the shared pass's one backward
(`bias_grads`: the gradient at each layer's output times its bias, recorded together with the input
gradient), so FullGrad costs one forward + one backward, like saliency, and shares them with the
other gradient methods asked for. Each map is post-processed at its own resolution and summed there:
only one upsampling per layer, never one per channel.
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.explain.context import bias_layers
from attnscope.explain.method import register_method
from attnscope.maps import upsample


def psi(t: torch.Tensor, eps: float) -> torch.Tensor:
    """FullGrad's post-processing per (row, channel) map (N, C, h, w): |t|, shifted to 0, divided by eps + its max."""
    a = t.abs().flatten(2)
    a = a - a.amin(dim=2, keepdim=True)
    return (a / (eps + a.amax(dim=2, keepdim=True))).view_as(t)


def _has_bias_layers(model: nn.Module) -> str | None:
    return None if bias_layers(model) else "FullGrad needs Conv2d or BatchNorm2d layers with a bias"


@register_method("fullgrad", "gradient", applies=_has_bias_layers)
def fullgrad(images: torch.Tensor, input_grad: torch.Tensor, bias_grads: tuple[torch.Tensor, ...], *,
             eps: float = 1e-7) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019, Eq. 6): S = Σ_c ψ(x ⊙ ∇_x y)_c + Σ_l Σ_c Up(ψ(b_l ⊙ ∇_{b_l} y)_c).

    ψ: absolute value, then each (channel) map shifted and scaled to [0, 1] (eps + max as the denominator,
    as the authors' code and pytorch-grad-cam); Up: bilinear upsampling to the input. Layers: every
    Conv2d with a bias and every BatchNorm2d (bias β − μγ/√(σ² + ε)), as the authors' code.
    """
    size = tuple(images.shape[-2:])
    total = psi(images * input_grad, eps).sum(dim=1)  # (N, H, W)
    for grad in bias_grads:
        total = total + upsample(psi(grad, eps).sum(dim=1), size)
    return total
