"""LRP for transformers: AttnLRP (Achtibat et al., ICML 2024) and Chefer et al.'s transformer attribution (CVPR 2021).

AttnLRP is implemented, as its authors' `lxt` does, in the gradient × input framework: a rule is a
change of one operation's backward, and the relevance of any tensor t is t ⊙ ∂y/∂t under the changed
backward. The registered rewrite `attnlrp` applies, for one forward + backward:
- LayerNorm: the identity rule — the standard deviation is a constant in the backward;
- elementwise activations (GELU, SiLU, ...): the identity rule — backward grad · f(x) / x;
- attention: the uniform rule on both products, A·V (half the relevance to A, half to V) and q·kᵀ
  (half to each), softmax with its own gradient (AttnLRP's softmax rule); or, with
  `attention="cp"`, CP-LRP (Ali et al., ICML 2022): A is a constant, all relevance goes to V;
- linear layers and residual additions keep their gradient (LRP-0 / ε → 0 in this framework).
lxt itself patches the classes of torch and transformers for the whole process; here each rule is
a hook or an instance attribute on the model's own modules, removed when the pass ends.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.attention import AttentionLayer, explicit_attention, no_attention_reason
from attnscope.explain.cam import safe_div
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.rewrites import register_rewrite
from attnscope.explain.tokens import TokenLayout
from attnscope.explain.transformer import _cls, grad_rollout

ATTENTION_RULES = ("uniform", "cp")
IDENTITY_RULE = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ELU, nn.LeakyReLU, nn.Mish)


class _Scaled(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant (the uniform rule's share)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    """Forward: the activation's output; backward: grad · f(x) / x (relevance passed through unchanged)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(safe_div(out.detach(), x.detach()))
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def _layer_norm_forward(module: nn.LayerNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """LayerNorm with the identity rule: (x − mean) / std with std treated as a constant in the backward."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(module.normalized_shape), 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = (centred.square().mean(dim=dims, keepdim=True) + module.eps).sqrt()
        y = centred / std.detach()
        if module.weight is not None:
            y = y * module.weight
        return y + module.bias if module.bias is not None else y

    return forward


def _scale_input(factor: float) -> Callable:
    return lambda _m, inputs: (_Scaled.apply(inputs[0], factor), *inputs[1:])


def _scale_output(factor: float) -> Callable:
    return lambda _m, _i, out: _Scaled.apply(out, factor)


def _projection(layer: AttentionLayer) -> nn.Module:
    for name in ("proj", "out_proj"):
        found = getattr(layer.module, name, None)
        if isinstance(found, nn.Module):
            return found
    raise NotApplicableError(f"attention layer {layer.name!r} has no `proj` / `out_proj` module after A·V")


def _attention_rule(layer: AttentionLayer, rule: str) -> list[Any]:
    """Hooks for one attention layer: CP-LRP detaches A; the uniform rule halves A·V's and q·kᵀ's gradients."""
    if rule == "cp":
        return [layer.probe.register_forward_hook(lambda _m, _i, out: out.detach())]
    handles = [_projection(layer).register_forward_pre_hook(_scale_input(0.5))]  # A·V: half to A, half to V
    if isinstance(layer.probe, nn.Softmax):  # q·kᵀ is the softmax's input: half to q, half to k
        return [*handles, layer.probe.register_forward_pre_hook(_scale_input(0.5))]
    norms = [getattr(layer.module, n, None) for n in ("q_norm", "k_norm")]
    if not all(isinstance(m, nn.Module) for m in norms):
        raise NotApplicableError(f"attention layer {layer.name!r}: no softmax module or q_norm / k_norm to apply "
                                 "AttnLRP's rule for q·kᵀ to; pass attention='cp'")
    return [*handles, *(m.register_forward_hook(_scale_output(0.5)) for m in norms)]


@register_rewrite("attnlrp", applies=None)
def _attnlrp(_name: str, model: nn.Module, attention: str = "uniform") -> tuple[list[AttentionLayer], Callable]:
    """AttnLRP's rules on every LayerNorm, elementwise activation and attention layer of `model`."""
    if attention not in ATTENTION_RULES:
        raise InputError(f"attnlrp attention rule must be one of {ATTENTION_RULES}, got {attention!r}")
    stack = ExitStack()
    try:
        layers = stack.enter_context(explicit_attention(model))
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.forward = _layer_norm_forward(module)
                stack.callback(module.__dict__.pop, "forward")
            elif isinstance(module, IDENTITY_RULE):
                stack.callback(module.register_forward_hook(lambda _m, i, o: _IdentityRule.apply(i[0], o)).remove)
        for layer in layers:
            for handle in _attention_rule(layer, attention):
                stack.callback(handle.remove)
    except BaseException:
        stack.close()
        raise
    return layers, stack.close


@register_method("attnlrp", "transformer", applies=no_attention_reason)
def attnlrp(images: torch.Tensor, oracle: Oracle, *, attention: str = "uniform", reduce: str = "sum") -> torch.Tensor:
    """AttnLRP (Achtibat et al., ICML 2024): R_x = x ⊙ ∂y/∂x under AttnLRP's rules (module docstring), R_out = y;
    `attention="cp"`: CP-LRP inside attention (Ali et al. 2022; lxt's choice for torchvision ViTs)."""
    rows = torch.arange(images.shape[0], device=images.device)
    grads = oracle.input_gradients(images, rows, rewrite="attnlrp", attention=attention)
    return reduce_channels(images * grads, reduce)


@register_method("chefer", "transformer", applies=no_attention_reason)
def chefer(images: torch.Tensor, scores: torch.Tensor, attention_grads: tuple[torch.Tensor, ...],
           token_layout: TokenLayout, oracle: Oracle) -> torch.Tensor:
    """Transformer attribution (Chefer, Gur & Wolf, CVPR 2021): CLS row of Π_l (I + E_h[(∇A_l ⊙ R_{A_l})⁺]).

    ∇A_l = ∂y/∂A_l (the shared pass), R_{A_l} = A_l ⊙ ∂y/∂A_l under AttnLRP's rules divided by y — the
    relevance of the attention weights for an output relevance of 1, as the reference code starts its LRP
    from the one-hot vector. The reference code computes R_A with its own LRP layers (α1β0 on linear
    layers); we use AttnLRP's conservative rules: one more forward + backward.
    """
    cls = _cls(token_layout)
    rows = torch.arange(images.shape[0], device=images.device)
    attn, lrp_grads = oracle.attention_gradients(images, rows, rewrite="attnlrp")
    unit = safe_div(torch.ones_like(scores), scores).view(-1, 1, 1, 1)  # 1 / y, 0 where y = 0
    relevance = [a * g * unit for a, g in zip(attn, lrp_grads, strict=True)]
    return token_layout.to_grid(grad_rollout(relevance, attention_grads)[:, cls])
