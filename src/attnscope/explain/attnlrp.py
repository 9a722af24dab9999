"""LRP for transformers: AttnLRP (Achtibat et al., ICML 2024) and Chefer et al.'s transformer attribution (CVPR 2021).

AttnLRP is implemented, as its authors' `lxt` does, in the gradient × input framework: a rule is a
change of one operation's backward, and the relevance of any tensor t is t ⊙ ∂y/∂t under the changed
backward. The registered rewrite `attnlrp` applies, for one forward + backward:
- layer and RMS normalisation (`F.layer_norm`, `F.rms_norm`, whatever module calls them): the identity
  rule — the standard deviation is a constant in the backward;
- elementwise activations (GELU, SiLU, Mish, ELU, Softplus, Hardswish, QuickGELU, ...): the identity rule —
  backward grad · f(x) / x;
- attention, of any implementation `explain.attention` reads: the uniform rule on both products, A·V
  (half the relevance to A, half to V) and q·kᵀ (half to each), softmax with its own gradient
  (AttnLRP's softmax rule); or, with `attention="cp"`, CP-LRP (Ali et al., ICML 2022): A is a constant,
  all relevance goes to V;
- linear layers, convolutions and residual additions keep their gradient (LRP-0 / ε → 0 in this framework).
lxt itself patches the classes of torch and transformers for the whole process; here the normalisations
and activations are intercepted (a `TorchFunctionMode`) only while the model runs, the attention by
`explain.attention`, and every change is undone when the pass ends.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from attnscope.errors import InputError
from attnscope.explain.adapters import _classes
from attnscope.explain.attention import AttentionLayer, explicit_attention, no_attention_reason
from attnscope.explain.cam import safe_div
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.rewrites import register_rewrite
from attnscope.explain.transformer import weighted
from attnscope.explain.windowed import TokenGraph, per_sequence, propagate

ATTENTION_RULES = ("uniform", "cp")
IDENTITY_RULE = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ELU, nn.LeakyReLU, nn.Mish, nn.Hardswish)
ELEMENTWISE = (F.gelu, F.silu, F.mish, F.elu, F.softplus, F.hardswish, F.celu, F.selu)
_INPLACE = {f: "inplace" in inspect.signature(f).parameters for f in ELEMENTWISE if inspect.isfunction(f)}


def _composite_activations() -> tuple[type, ...]:
    """Activation modules written as products (x · σ(1.702 x)): QuickGELU of transformers, open_clip and timm."""
    return (_classes("transformers.activations", "QuickGELUActivation")
            + _classes("open_clip.transformer", "QuickGELU") + _classes("timm.layers.activations", "QuickGELU"))


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


def _layer_norm(x: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm with the identity rule: (x − mean) / std, std a constant in the backward."""
    dims = tuple(range(-len(normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    y = centred / (centred.square().mean(dim=dims, keepdim=True) + eps).sqrt().detach()
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def _rms_norm(x: torch.Tensor, normalized_shape, weight=None, eps: float | None = None) -> torch.Tensor:
    """RMSNorm with the identity rule: x / rms(x), rms a constant in the backward."""
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt(x.square().mean(dim=dims, keepdim=True) + eps).detach()
    return y * weight if weight is not None else y


class _Rules(TorchFunctionMode):
    """While the model runs: normalisations and elementwise activations under AttnLRP's identity rule."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.layer_norm:
            return _layer_norm(*args, **kwargs)
        if func is F.rms_norm:
            return _rms_norm(*args, **kwargs)
        if func in ELEMENTWISE:
            if _INPLACE.get(func):  # never in place: f(x) / x needs x
                args, kwargs = args[:1], {**kwargs, "inplace": False}
            return _IdentityRule.apply(args[0], func(*args, **kwargs))
        return func(*args, **kwargs)


def _under_rules(model: nn.Module) -> Callable[[], None]:
    """Run `model`'s forward under `_Rules` (an instance attribute); returns the undo."""
    own, inner = model.__dict__.get("forward"), model.forward

    def forward(*args, **kwargs):
        with _Rules():
            return inner(*args, **kwargs)

    model.forward = forward
    return (lambda: model.__dict__.pop("forward", None)) if own is None else (lambda: setattr(model, "forward", own))


@register_rewrite("attnlrp", applies=None)
def _attnlrp(_name: str, model: nn.Module, attention: str = "uniform", record: bool = True
             ) -> tuple[list[AttentionLayer], Callable]:
    """AttnLRP's rules on every normalisation, elementwise activation and attention layer of `model`
    (`record=False`: the weights are not read, fused attention kernels stay fused)."""
    if attention not in ATTENTION_RULES:
        raise InputError(f"attnlrp attention rule must be one of {ATTENTION_RULES}, got {attention!r}")
    stack = ExitStack()
    try:
        layers = stack.enter_context(explicit_attention(model, rule=attention, record=record))
        stack.callback(_under_rules(model))
        modules = IDENTITY_RULE + _composite_activations()
        for module in model.modules():
            if isinstance(module, modules):
                stack.callback(module.register_forward_hook(lambda _m, i, o: _IdentityRule.apply(i[0], o)).remove)
    except BaseException:
        stack.close()
        raise
    return layers, stack.close


@register_method("attnlrp", "transformer", applies=no_attention_reason)
def attnlrp(images: torch.Tensor, oracle: Oracle, *, attention: str = "uniform", reduce: str = "sum") -> torch.Tensor:
    """AttnLRP (Achtibat et al., ICML 2024): R_x = x ⊙ ∂y/∂x under AttnLRP's rules (module docstring), R_out = y;
    `attention="cp"`: CP-LRP inside attention (Ali et al. 2022; lxt's choice for torchvision ViTs)."""
    rows = torch.arange(images.shape[0], device=images.device)
    grads = oracle.input_gradients(images, rows, rewrite="attnlrp", attention=attention, record=False)
    return reduce_channels(images * grads, reduce)


@register_method("chefer", "transformer", applies=no_attention_reason)
def chefer(images: torch.Tensor, scores: torch.Tensor, attention_grads: tuple[torch.Tensor, ...],
           token_graph: TokenGraph, oracle: Oracle) -> torch.Tensor:
    """Transformer attribution (Chefer, Gur & Wolf, CVPR 2021): readout (CLS) row of Π_l (I + E_h[(∇A_l ⊙ R_{A_l})⁺]).

    ∇A_l = ∂y/∂A_l (the shared pass), R_{A_l} = A_l ⊙ ∂y/∂A_l under AttnLRP's rules divided by y — the
    relevance of the attention weights for an output relevance of 1, as the reference code starts its LRP
    from the one-hot vector. The reference code computes R_A with its own LRP layers (α1β0 on linear
    layers); we use AttnLRP's conservative rules: one more forward + backward. Windowed and hierarchical
    models: the product is composed on the grid as grad-rollout's (`explain.windowed`).
    """
    graph = token_graph
    graph.check_composes("chefer")
    rows = torch.arange(images.shape[0], device=images.device)
    attn, lrp_grads = oracle.attention_gradients(images, rows, rewrite="attnlrp")
    unit = safe_div(torch.ones_like(scores), scores)  # 1 / y, 0 where y = 0
    relevance = [(per_sequence(a * g, p) * unit.view(-1, 1, 1, 1, 1)).flatten(0, 1)
                 for a, g, p in zip(attn, lrp_grads, graph.layers, strict=True)]
    mats = weighted(relevance, attention_grads, graph)
    start = graph.readout.to(mats[0])[None].expand(mats[0].shape[0], -1)
    return graph.to_grid(propagate(graph, mats, start, "add"))
