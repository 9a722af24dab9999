"""Reading the attention weights of any implementation, by intercepting the call that forms them.

A fused kernel (`F.scaled_dot_product_attention`, PyTorch's fast MHA path, flash attention) never forms
the weights (B, heads, Nq, Nk), so nothing could hook them. `explicit_attention(model)` finds every
attention layer (the implementations of `explain.adapters`) and, for a block, runs each one under a
`TorchFunctionMode` that computes its attention explicitly — softmax(q kᵀ · scale + mask) v, with the
module's own tensors — and passes the weights through a probe module (`AttentionProbe`), whose output
the hook engine records. Three calls are intercepted inside an attention layer's forward:

- `F.scaled_dot_product_attention(q, k, v, ...)` (timm's fused path, Hugging Face's "sdpa", open_clip);
- `F.multi_head_attention_forward(...)` (`nn.MultiheadAttention`: torchvision's ViT, open_clip's towers),
  computed with the module's packed or separate projections and its masks;
- the softmax over the last axis of a tensor of ≥ 3 dimensions (eager paths: timm, Hugging Face
  "eager", torchvision's Swin and MaxViT, LeViT), and the product that reads its result (A·V).

`rule` applies AttnLRP's rules inside the attention (`explain.attnlrp`): "uniform" halves the gradient at
q·kᵀ and at A·V (each product gives half its relevance to either factor); "cp" makes A a constant. The
weights are identical with and without a rule. The `explicit-attention` rewrite of `explain.rewrites`.
Everything is restored when the block ends, also on error; a layer that does not run in the call (the
text tower of a CLIP model called as `get_image_features`) is simply not recorded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from attnscope.errors import NotApplicableError
from attnscope.explain.adapters import ATTENTION, AttentionAdapter, Call, Geometry, adapter_for
from attnscope.explain.rewrites import register_rewrite, rewritten

RULES = (None, "uniform", "cp")
PRODUCTS = frozenset({"matmul", "__matmul__", "bmm", "einsum"})


class AttentionProbe(nn.Identity):
    """The identity on one attention call's weights (B', heads, Nq, Nk); `geometry`: where its sequences sit."""

    def __init__(self) -> None:
        super().__init__()
        self.geometry: Geometry | None = None


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: its dotted `name`, the `module`, the `probe` whose output is its weights, its `adapter`."""

    name: str
    module: nn.Module
    probe: AttentionProbe
    adapter: AttentionAdapter = field(default=None, compare=False)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention layers of `model` (dotted name, module), in module order; none nested in another."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if found and name.startswith(found[-1][0] + ".") and found[-1][0]:
            continue
        if adapter_for(module) is not None:
            found.append((name, module))
    return found


def no_attention_reason(model: nn.Module) -> str | None:
    """None when `model` has attention layers attnscope can read, else why not (for `applies`)."""
    if attention_modules(model):
        return None
    return ("it has no attention layers of an implementation attnscope reads (" + ", ".join(ATTENTION.names())
            + "; `explain.adapters.register_attention` adds one)")


@contextmanager
def explicit_attention(model: nn.Module, rule: str | None = None, record: bool = True
                       ) -> Iterator[list[AttentionLayer]]:
    """Every attention layer of `model` computed explicitly for the block, through its probe; yield the layers.

    `record=False`: nobody reads the weights (AttnLRP's input relevance), so an SDPA or MHA call keeps its
    fused kernel, with the rule applied around it (q and k, A·V: the same gradients)."""
    if rule not in RULES:
        raise NotApplicableError(f"attention rule must be one of {RULES}, got {rule!r}")
    if not attention_modules(model):
        raise NotApplicableError(f"this model {no_attention_reason(model)}")
    with rewritten(model, "explicit-attention", rule=rule, record=record) as applied:
        ((_, layers),) = applied
        yield layers


@register_rewrite("explicit-attention", applies=None)
def _explicit(_name: str, model: nn.Module, rule: str | None = None, record: bool = True
              ) -> tuple[list[AttentionLayer], Callable]:
    """Each attention layer of `model` run under its interception, through a probe; undo restores every layer."""
    layers, undo = [], []
    try:
        for name, module in attention_modules(model):
            adapter = adapter_for(module)
            path = tuple(model.get_submodule(".".join(name.split(".")[:i])) for i in range(name.count(".") + 2))
            site = _Site(name, module, path, adapter, AttentionProbe(), rule, record)
            undo.append(adapter.prepare(module))
            undo.append(site.install())
            layers.append(AttentionLayer(name, module, site.probe, adapter))
    except BaseException:
        for restore in reversed(undo):
            restore()
        raise
    return layers, lambda: [restore() for restore in reversed(undo)]


class _Scaled(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant (the uniform rule's share)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.clone()  # a new tensor, so in-place ops downstream stay legal

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


@dataclass
class _Site:
    """One attention layer while it is read: what its interception needs."""

    name: str
    module: nn.Module
    path: tuple[nn.Module, ...]
    adapter: AttentionAdapter
    probe: AttentionProbe
    rule: str | None
    record: bool = True  # False: the weights are not read, a fused kernel may stay fused
    weights: torch.Tensor | None = None  # this call's weights, until the product that reads them
    done: bool = False

    def install(self) -> Callable[[], None]:
        """Run the module's forward under the interception (an instance attribute); returns the undo."""
        module, own = self.module, self.module.__dict__.get("forward")
        inner = module.forward

        def forward(*args, **kwargs):
            self.weights, self.done = None, False
            self.probe.geometry = self.adapter.geometry(Call(self.name, module, self.path, args, kwargs))
            with _Intercept(self):
                out = inner(*args, **kwargs)
            if not self.done:
                raise NotApplicableError(f"attention layer {self.name!r} ({self.adapter.name}) ran, but attnscope "
                                         "found no softmax over its keys nor an attention call in it")
            return out

        module.forward = forward
        return (lambda: module.__dict__.pop("forward", None)) if own is None else \
            (lambda: setattr(module, "forward", own))

    def attend(self, scores: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """softmax over the keys (the last axis) under the rule, the weights through the probe."""
        if self.done:
            raise NotApplicableError(f"attention layer {self.name!r} computes more than one attention per call")
        if self.rule == "uniform":  # q·kᵀ: half of its relevance to q, half to k
            scores = _Scaled.apply(scores, 0.5)
        weights = scores.softmax(dim=-1, dtype=dtype)
        shape = weights.shape
        if weights.dim() == 3:  # (B'·heads, Nq, Nk)
            heads = self.adapter.heads(self.module) or 1
            weights = weights.view(-1, heads, *shape[-2:])
        flat = weights.reshape(-1, *weights.shape[-3:])  # (B', heads, Nq, Nk)
        recorded = self.probe(flat) if self.record else flat
        if self.rule == "cp":  # CP-LRP: A is a constant, all relevance goes to V
            recorded = recorded.detach()
        self.weights, self.done = recorded.reshape(shape), True
        return self.weights

    def product(self, out: torch.Tensor) -> torch.Tensor:
        """The result of A·V, under the rule (half of its relevance to A, half to V)."""
        self.weights = None
        return _Scaled.apply(out, 0.5) if self.rule == "uniform" else out


class _Intercept(TorchFunctionMode):
    """While one attention layer runs: its softmax, SDPA or MHA call computed explicitly by its `_Site`."""

    def __init__(self, site: _Site) -> None:
        super().__init__()
        self.site = site

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _sdpa(self.site, *args, **kwargs)
        if func is F.multi_head_attention_forward:
            return _mha(self.site, *args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "softmax" and not self.site.done:
            scores, dim = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
            if isinstance(scores, torch.Tensor) and scores.dim() >= 3 and dim in (-1, scores.dim() - 1):
                return self.site.attend(scores, kwargs.get("dtype"))
        if name in PRODUCTS and self.site.weights is not None and _reads(args, self.site.weights):
            return self.site.product(func(*args, **kwargs))
        return func(*args, **kwargs)


def _reads(args: tuple, weights: torch.Tensor) -> bool:
    """Whether a product's operands include the weights (or a view of them: same storage)."""
    flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
    ptr = weights.data_ptr()
    return any(isinstance(a, torch.Tensor) and a.data_ptr() == ptr for a in flat)


def _masked(scores: torch.Tensor, mask: torch.Tensor | None, allowed_if_true: bool) -> torch.Tensor:
    """scores + a float mask, or −∞ where a boolean mask forbids (SDPA: True = allowed; MHA: True = forbidden)."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        forbidden = ~mask if allowed_if_true else mask
        return scores.masked_fill(forbidden, float("-inf"))
    return scores + mask


def _fused(site: _Site, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
           enable_gqa=False) -> torch.Tensor:
    """F.scaled_dot_product_attention itself, the rule around it: "uniform" halves the gradients of q and k (half
    of q·kᵀ's) and of the output (half of A·V's); "cp" makes q and k constants (A a constant)."""
    if site.rule == "uniform":
        query, key = _Scaled.apply(query, 0.5), _Scaled.apply(key, 0.5)
    elif site.rule == "cp":
        query, key = query.detach(), key.detach()
    out = F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                         enable_gqa=enable_gqa)
    site.done = True
    return _Scaled.apply(out, 0.5) if site.rule == "uniform" else out


def _sdpa(site: _Site, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False) -> torch.Tensor:
    """F.scaled_dot_product_attention written out (its documented reference), weights through the site."""
    if not site.record:
        return _fused(site, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], -3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
    scores = (query @ key.transpose(-2, -1)) * scale  # (..., Nq, Nk)
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    scores = _masked(scores, attn_mask, allowed_if_true=True)
    weights = site.attend(scores, torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else None)
    weights = F.dropout(weights.to(query.dtype), dropout_p, training=dropout_p > 0)
    return site.product(weights @ value)


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _mha(site: _Site, *args, **kwargs):
    """F.multi_head_attention_forward written out for (L, B, E) inputs, weights through the site."""
    a = _MHA_SIGNATURE.bind(*args, **kwargs)
    a.apply_defaults()
    p = a.arguments
    if p["bias_k"] is not None or p["add_zero_attn"] or p["static_k"] is not None or p["static_v"] is not None:
        raise NotApplicableError(f"attention layer {site.name!r}: attnscope reads nn.MultiheadAttention without "
                                 "bias_k / bias_v, add_zero_attn or static keys")
    query, key, value = p["query"], p["key"], p["value"]
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    (tq, b, e), tk, heads = query.shape, key.shape[0], p["num_heads"]
    if p["use_separate_proj_weight"]:
        weights = (p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"])
    else:
        weights = p["in_proj_weight"].chunk(3)
    biases = (None,) * 3 if p["in_proj_bias"] is None else p["in_proj_bias"].chunk(3)
    q, k, v = (F.linear(t, w, bb) for t, w, bb in zip((query, key, value), weights, biases, strict=True))
    q, k, v = (t.reshape(t.shape[0], b * heads, e // heads).transpose(0, 1).reshape(b, heads, t.shape[0], -1)
               for t in (q, k, v))  # (B, h, T, d)
    mask = p["attn_mask"]
    if mask is None and p["is_causal"]:
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).triu(1)
    if mask is not None:
        mask = _masked(torch.zeros(b, heads, tq, tk, dtype=q.dtype, device=q.device),
                       mask.view(b, heads, tq, tk) if mask.dim() == 3 else mask, allowed_if_true=False)
    if p["key_padding_mask"] is not None:
        mask = _masked(torch.zeros(b, 1, 1, tk, dtype=q.dtype, device=q.device) if mask is None else mask,
                       p["key_padding_mask"].view(b, 1, 1, tk), allowed_if_true=False)
    dropout = p["dropout_p"] if p["training"] else 0.0
    attn = None
    if not site.record and not p["need_weights"]:
        out = _fused(site, q, k, v, mask, dropout)
    else:
        scores = (q / (e // heads) ** 0.5) @ k.transpose(-2, -1)  # (B, h, Tq, Tk)
        attn = site.attend(scores if mask is None else scores + mask)
        out = site.product(F.dropout(attn, dropout, training=dropout > 0) @ v)  # (B, h, Tq, d)
    out = out.permute(2, 0, 1, 3).reshape(tq, b, e)
    out = F.linear(out, p["out_proj_weight"], p["out_proj_bias"])
    shown = (attn.mean(dim=1) if p["average_attn_weights"] else attn) if attn is not None and p["need_weights"] \
        else None
    if unbatched:
        out = out.squeeze(1)
        shown = None if shown is None else shown.squeeze(0)
    return out, shown
