"""Finding a transformer's attention layers and making them materialise their weights for a call.

Fused attention (`F.scaled_dot_product_attention`, PyTorch's fast MHA path) never forms the
weights (B, heads, T, T), so nothing could hook them. `explicit_attention(model)` switches every
attention layer to its explicit path for a block and yields, per layer, the module whose output
is the softmaxed weights (a "probe"); the hook engine records probes like any layer. It is the
`explicit-attention` rewrite of `explain.rewrites`. Supported:

- modules with a `fused_attn` flag (TinyViT, timm's ViT family): the flag is set to False; the
  probe is the layer's `nn.Softmax` child if it has one (TinyViT), else its `attn_drop` (timm
  applies it right after the softmax; it is the identity in eval mode);
- `nn.MultiheadAttention` (torchvision's ViT): its forward is replaced by the textbook computation
  with the same parameters, routed through a private `nn.Softmax`;
- Hugging Face attention modules (ViT, DeiT, Swin, Dinov2, ...: they call the attention function
  that `config._attn_implementation` names): for the call the config names "attnscope", an
  attention function registered with transformers' `AttentionInterface` that computes the eager
  path (softmax(QKᵀ·scale + mask) V) with the weights routed through a private `nn.Identity` probe.

Everything is restored when the block ends, also on error.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import NotApplicableError
from attnscope.explain.rewrites import register_rewrite, rewritten


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: its dotted `name`, the `module`, and the `probe` whose output is its weights."""

    name: str
    module: nn.Module
    probe: nn.Module


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention layers of `model` (dotted name, module), in module order."""
    return [(n, m) for n, m in model.named_modules() if _kind(m) is not None]


def no_attention_reason(model: nn.Module) -> str | None:
    """None when `model` has attention layers attnscope can read, else why not (for `applies`)."""
    if attention_modules(model):
        return None
    return (
        "it has no attention layers attnscope can read (an nn.MultiheadAttention, a module with a "
        "`fused_attn` flag and an nn.Softmax or `attn_drop` child, as in TinyViT and timm, or a Hugging Face "
        "attention module)"
    )


@contextmanager
def explicit_attention(model: nn.Module) -> Iterator[list[AttentionLayer]]:
    """Switch every attention layer of `model` to explicit weights for the block; yield its layers."""
    found = attention_modules(model)
    if not found:
        raise NotApplicableError(f"this model {no_attention_reason(model)}")
    for name, module in found:
        if _kind(module) == "mha":
            _check_mha(name, module)
        elif _kind(module) == "flag":
            _flag_probe(name, module)  # raises before anything is rewritten
    with rewritten(model, "explicit-attention") as layers:
        yield [layer for _, layer in layers]


@register_rewrite("explicit-attention", applies=lambda m: _kind(m) is not None)
def _explicit(name: str, module: nn.Module) -> tuple[AttentionLayer, Callable[[], None]]:
    """One attention layer made to form its weights through a probe module; undo restores it."""
    if _kind(module) == "hf":
        probe, undo = _hf_explicit(module)
    elif _kind(module) == "mha":
        probe = nn.Softmax(dim=-1)
        own = module.__dict__.get("forward")
        module.forward = _explicit_mha(module, probe)
        undo = (lambda: module.__dict__.pop("forward")) if own is None else (lambda: setattr(module, "forward", own))
    else:
        probe, fused = _flag_probe(name, module), module.fused_attn
        module.fused_attn = False
        undo = lambda: setattr(module, "fused_attn", fused)
    return AttentionLayer(name, module, probe), undo


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(getattr(module, "fused_attn", None), bool):
        return "flag"
    if _is_hf_attention(module):
        return "hf"
    return None


def _flag_probe(name: str, module: nn.Module) -> nn.Module:
    softmaxes = [m for m in module.children() if isinstance(m, nn.Softmax)]
    if len(softmaxes) == 1:
        return softmaxes[0]
    drop = getattr(module, "attn_drop", None)
    if isinstance(drop, nn.Module):
        return drop
    raise NotApplicableError(
        f"attention layer {name!r} has a `fused_attn` flag but no single nn.Softmax or `attn_drop` child "
        f"whose output is its weights"
    )


def _check_mha(name: str, module: nn.MultiheadAttention) -> None:
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        raise NotApplicableError(
            f"attention layer {name!r}: attnscope reads nn.MultiheadAttention with one packed in-projection, "
            f"no bias_k/bias_v and no add_zero_attn"
        )


def _explicit_mha(module: nn.MultiheadAttention, probe: nn.Softmax):
    """`module.forward` for self-attention without masks, with the weights formed by `probe`."""

    def forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise NotApplicableError("attnscope reads nn.MultiheadAttention as self-attention without masks")
        if query.dim() != 3:
            raise NotApplicableError(f"nn.MultiheadAttention on unbatched input {tuple(query.shape)}")
        x = query if module.batch_first else query.transpose(0, 1)  # (B, T, D)
        b, t, d = x.shape
        heads = module.num_heads
        qkv = F.linear(x, module.in_proj_weight, module.in_proj_bias)  # (B, T, 3D)
        q, k, v = qkv.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 × (B, h, T, d/h)
        attn = probe((q / math.sqrt(d // heads)) @ k.transpose(-2, -1))  # (B, h, T, T)
        drop = F.dropout(attn, module.dropout, module.training)
        out = (drop @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        out = module.out_proj(out)  # the module itself, so that a rewrite can hook its input
        out = out if module.batch_first else out.transpose(0, 1)
        weights = (attn.mean(dim=1) if average_attn_weights else attn) if need_weights else None
        return out, weights

    return forward



# --- Hugging Face -------------------------------------------------------------------------------

HF_IMPLEMENTATION = "attnscope"  # the name our attention function is registered under in transformers
_HF_PROBES: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _is_hf_attention(module: nn.Module) -> bool:
    """A transformers attention module: it calls the attention function its config names, from q/k/v projections."""
    config = getattr(module, "config", None)
    return (type(module).__module__.startswith("transformers.") and hasattr(config, "_attn_implementation")
            and all(isinstance(getattr(module, p, None), nn.Module) for p in ("q_proj", "k_proj", "v_proj")))


def _hf_explicit(module: nn.Module) -> tuple[nn.Module, Callable[[], None]]:
    """Route `module`'s attention through our registered eager function with a probe; undo restores the config."""
    from transformers import AttentionInterface

    if HF_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(HF_IMPLEMENTATION, _hf_attention)
    probe = _HF_PROBES[module] = nn.Identity()
    config, before = module.config, module.config._attn_implementation
    config._attn_implementation = HF_IMPLEMENTATION

    def undo() -> None:
        config._attn_implementation = before
        _HF_PROBES.pop(module, None)

    return probe, undo


def _hf_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention, softmax(Q Kᵀ · scale + mask) V (Vaswani et al. 2017), weights through the module's probe."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query @ key.transpose(-2, -1)) * scaling  # (B, heads, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask
    elif query.shape[2] > 1 and (getattr(module, "is_causal", True) if _kwargs.get("is_causal") is None
                                 else _kwargs["is_causal"]):  # as transformers' sdpa: no mask means causal
        tq, tk = query.shape[2], key.shape[2]
        scores = scores.masked_fill(torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(tk - tq + 1),
                                    float("-inf"))
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    probe = _HF_PROBES.get(module)
    weights = probe(weights) if probe is not None else weights
    out = F.dropout(weights, p=dropout, training=module.training) @ value  # (B, heads, T, d)
    return out.transpose(1, 2).contiguous(), weights
