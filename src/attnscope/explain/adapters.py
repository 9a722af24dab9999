"""The attention implementations attnscope reads: one registry, one entry per implementation.

Every implementation computes the same thing — softmax(q kᵀ · scale + bias) v, per sequence and head —
and attnscope always finds the weights the same way (`explain.attention`): while an attention layer
runs, the softmax over its last axis (or the `F.scaled_dot_product_attention` / `F.multi_head_attention_forward`
call that hides it) is intercepted and computed explicitly, with the weights passing through a probe
module that the hook engine records. What differs between implementations, and what an entry here
says, is:

- `matches(module)`: whether `module` is an attention layer of this implementation (first match wins,
  in registration order, so specific entries come before generic ones);
- `prepare(module)`: what to switch for the call so that the attention runs through an interceptable
  path (Hugging Face: the config's `_attn_implementation` set to "eager", restored after);
  returns the undo;
- `heads(module)` and `output(module)`: the head count and the output projection after A·V (for
  rules and readers that need them; the weights themselves never depend on these);
- `geometry(call)`: where the sequences of one call sit on the model's token grid — one global
  sequence (ViT, DeiT, LeViT, CoAtNet's transformer stages), windows of M × M tokens cyclically
  shifted by s (Swin, Swin-V2, MaxViT's block attention), or a dilated grid of G × G tokens (MaxViT's
  grid attention, MobileViT's unfolded patches). It is read at call time, from the call's module,
  its ancestors and arguments, because some implementations decide the window and shift per input;
- `composes`: None when the layers of this implementation form one residual chain to the output (so
  rollout-style products are defined), else why not (an encoder–decoder, a multi-scale head).

Adding an implementation (a CLIP text tower, BLIP, LLaVA's projector ...) is one `register_attention`
call; nothing else in attnscope changes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from attnscope.registry import Registry

Undo = Callable[[], None]
KINDS = ("global", "window", "grid")


@dataclass(frozen=True)
class Geometry:
    """How the sequences of one attention call sit on a token grid.

    "global": one sequence per image (prefix tokens, then the grid in raster order); "window": the
    grid rolled by −`shift` and cut into `size` windows, each a sequence in raster order, windows in
    raster order (Swin); "grid": token (g·h/G + r) of each axis in sequence r, position g, for a grid of
    G = `size` (MaxViT's grid attention; (0, 0): found from the sequence length and the image's aspect).
    `grid`: the token grid (h, w) when the implementation knows it
    (else it is found from the token count and the image's aspect).
    """

    kind: str = "global"
    size: tuple[int, int] = (0, 0)
    shift: tuple[int, int] = (0, 0)
    grid: tuple[int, int] | None = None
    on_grid: bool = True  # False: the queries are no image tokens (a decoder's object queries)


@dataclass(frozen=True)
class Call:
    """One call of an attention layer: its dotted `name`, the `module`, its ancestors (root first) and arguments."""

    name: str
    module: nn.Module
    path: tuple[nn.Module, ...]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _global(_call: Call) -> Geometry:
    return Geometry()


def _nothing(_module: nn.Module) -> Undo:
    return lambda: None


def heads_of(module: nn.Module) -> int | None:
    """The head count an attention module declares (num_heads, num_attention_heads, n_heads, heads)."""
    for attr in ("num_heads", "num_attention_heads", "n_heads", "heads"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def output_of(module: nn.Module) -> nn.Module | None:
    """The projection after A·V (out_proj, o_proj, proj, to_out, dense of an `output` child), or None."""
    for attr in ("out_proj", "o_proj", "proj", "to_out"):
        found = getattr(module, attr, None)
        if isinstance(found, nn.Module):
            return found
    return None


@dataclass(frozen=True)
class AttentionAdapter:
    """One attention implementation (module docstring)."""

    name: str
    matches: Callable[[nn.Module], bool]
    geometry: Callable[[Call], Geometry] = _global
    prepare: Callable[[nn.Module], Undo] = _nothing
    heads: Callable[[nn.Module], int | None] = heads_of
    output: Callable[[nn.Module], nn.Module | None] = output_of
    composes: str | None = None


ATTENTION: Registry[AttentionAdapter] = Registry("attention implementation")


def register_attention(adapter: AttentionAdapter) -> AttentionAdapter:
    """Add an implementation; later registrations are tried after earlier ones."""
    return ATTENTION.register(adapter.name, adapter)


def adapter_for(module: nn.Module) -> AttentionAdapter | None:
    """The first registered implementation that `module` is an attention layer of, or None."""
    for name in ATTENTION:
        adapter = ATTENTION.get(name)
        if adapter.matches(module):
            return adapter
    return None


# --- matching by implementation class, without importing optional libraries ------------------------


def _classes(module: str, *names: str) -> tuple[type, ...]:
    """The named classes of `module` if that library module is already imported (a model built from it is)."""
    loaded = sys.modules.get(module)
    return tuple(c for c in (getattr(loaded, n, None) for n in names) if isinstance(c, type))


def _is(module: nn.Module, where: str, *names: str) -> bool:
    found = _classes(where, *names)
    return bool(found) and isinstance(module, found)


def _ancestor(call: Call, where: str, *names: str) -> nn.Module | None:
    """The nearest ancestor of the call's module of one of the named classes."""
    for parent in reversed(call.path[:-1]):
        if _is(parent, where, *names):
            return parent
    return None


def _with(call: Call, *attrs: str) -> nn.Module | None:
    """The nearest ancestor (or the module) holding all of `attrs`."""
    for parent in reversed(call.path):
        if all(hasattr(parent, a) for a in attrs):
            return parent
    return None


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


# --- Swin: windows of M × M tokens, cyclically shifted by s ----------------------------------------


def _swin_block(call: Call) -> Geometry:
    """timm and Hugging Face Swin / Swin-V2: the block around the attention holds its window and shift."""
    block = _with(call, "window_size", "shift_size")
    if block is None:
        return Geometry()
    return Geometry("window", _pair(block.window_size), _pair(block.shift_size))


def _tv_swin(call: Call) -> Geometry:
    """torchvision's ShiftedWindowAttention: the grid is its input (B, H, W, C); no shift where the window
    covers the grid (as `shifted_window_attention` decides per call)."""
    _, h, w, _ = call.args[0].shape
    size = _pair(call.module.window_size)
    shift = tuple(0 if m >= n else s for m, n, s in zip(size, (h, w), _pair(call.module.shift_size), strict=True))
    return Geometry("window", size, shift, (h, w))


def _tv_maxvit(call: Call) -> Geometry:
    """torchvision's MaxViT: PartitionAttentionLayer's `p` is the window size ("window") or the number
    of partitions per side ("grid", whose sequences then hold grid_size / p tokens per side)."""
    layer = _ancestor(call, "torchvision.models.maxvit", "PartitionAttentionLayer")
    if layer is None:
        return Geometry()
    grid = _pair(layer.grid_size)
    if layer.partition_type == "window":
        return Geometry("window", (layer.p, layer.p), (0, 0), grid)
    return Geometry("grid", (grid[0] // layer.p, grid[1] // layer.p), (0, 0), grid)


def _timm_maxxvit(call: Call) -> Geometry:
    """timm's MaxViT / CoAtNet: PartitionAttention's block or grid partition; plain transformer blocks are global."""
    block = _with(call, "partition_block", "partition_size")
    if block is None:
        return Geometry()
    return Geometry("window" if block.partition_block else "grid", _pair(block.partition_size))


def _timm_vit(call: Call) -> Geometry:
    """timm's ViT attention: global, except inside MobileViT's blocks, which run it over the unfolded patches,
    one sequence per pixel position of a patch — a grid partition of (H / patch_h) × (W / patch_w) patches."""
    if _ancestor(call, "timm.models.mobilevit", "MobileVitBlock") is None:
        return Geometry()
    return Geometry("grid")  # the sequence's grid follows from its length and the image's aspect


def _detr(call: Call) -> Geometry:
    """DETR: the encoder attends over the backbone's grid; the decoder's queries are object queries."""
    decoder = _is(call.module, "transformers.models.detr.modeling_detr", "DetrCrossAttention") or \
        _ancestor(call, "transformers.models.detr.modeling_detr", "DetrDecoderLayer") is not None
    return Geometry(on_grid=not decoder)


def _hf_eager(module: nn.Module) -> Undo:
    """Hugging Face: the config's attention implementation set to "eager" for the call (SDPA, flash, flex
    never form the weights), restored after."""
    config = module.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    return lambda: setattr(config, "_attn_implementation", before)


_PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("qkv",), ("c_attn",))


def _is_hf_interface(module: nn.Module) -> bool:
    """A transformers attention module: its own q, k, v projections (separate or fused: `qkv`, GPT-2's `c_attn`);
    most call the attention function their config names (switched to "eager" for the call), the others
    compute their softmax themselves (BLIP, older ViT-style `query` / `key` / `value` modules)."""
    return type(module).__module__.startswith("transformers.") and any(
        all(isinstance(getattr(module, p, None), nn.Module) for p in names) for names in _PROJECTIONS)


def _hf_prepare(module: nn.Module) -> Undo:
    return _hf_eager(module) if hasattr(getattr(module, "config", None), "_attn_implementation") else (lambda: None)


def _hf_named(module: nn.Module, *names: str) -> bool:
    return type(module).__module__.startswith("transformers.") and type(module).__name__ in names


_HF_CROSS = "an encoder–decoder (DETR): its output reads object queries through cross-attention, so no chain " \
            "of self-attention layers leads from the image to a prediction"
_HF_MULTISCALE = "a multi-scale model (SegFormer): its decode head reads every stage, not one chain of layers"

for _adapter in (
    AttentionAdapter("torch-mha", lambda m: isinstance(m, nn.MultiheadAttention)),
    AttentionAdapter("torchvision-swin", lambda m: _is(m, "torchvision.models.swin_transformer",
                                                       "ShiftedWindowAttention", "ShiftedWindowAttentionV2"),
                     geometry=_tv_swin),
    AttentionAdapter("torchvision-maxvit", lambda m: _is(m, "torchvision.models.maxvit",
                                                         "RelativePositionalMultiHeadAttention"),
                     geometry=_tv_maxvit, heads=lambda m: m.n_heads, output=lambda m: m.merge),
    AttentionAdapter("timm-swin", lambda m: _is(m, "timm.models.swin_transformer", "WindowAttention")
                     or _is(m, "timm.models.swin_transformer_v2", "WindowAttention")
                     or _is(m, "timm.models.swin_transformer_v2_cr", "WindowMultiHeadAttention"),
                     geometry=_swin_block),
    AttentionAdapter("timm-maxxvit", lambda m: _is(m, "timm.models.maxxvit", "Attention2d", "AttentionCl"),
                     geometry=_timm_maxxvit),
    AttentionAdapter("timm-levit", lambda m: _is(m, "timm.models.levit", "Attention", "AttentionDownsample")),
    AttentionAdapter("timm-efficientformer", lambda m: _is(m, "timm.models.efficientformer", "Attention")),
    # timm's ViT family (ViT, DeiT, EVA, BEiT, register ViTs, MobileViT's blocks): a `fused_attn` flag; both of
    # its paths are read.
    AttentionAdapter("timm", lambda m: isinstance(getattr(m, "fused_attn", None), bool), geometry=_timm_vit),
    AttentionAdapter("open_clip", lambda m: _is(m, "open_clip.transformer", "Attention")),
    AttentionAdapter("hf-swin", lambda m: _hf_named(m, "SwinAttention", "Swinv2SelfAttention", "DonutSwinAttention"),
                     geometry=_swin_block, prepare=_hf_prepare),
    AttentionAdapter("hf-levit", lambda m: _hf_named(m, "LevitAttention", "LevitAttentionSubsample")),
    AttentionAdapter("hf-detr", lambda m: _hf_named(m, "DetrSelfAttention", "DetrCrossAttention")
                     and _is_hf_interface(m), geometry=_detr, prepare=_hf_prepare, composes=_HF_CROSS),
    AttentionAdapter("hf-segformer", lambda m: _hf_named(m, "SegformerAttention") and _is_hf_interface(m),
                     prepare=_hf_prepare, composes=_HF_MULTISCALE),
    AttentionAdapter("hf", _is_hf_interface, prepare=_hf_prepare),
):
    register_attention(_adapter)
