"""Which layer a layer-based method (the CAM family) reads, and how its output becomes a map (N, C, h, w).

A layer is "auto", a dotted name, a module, or a `Layer` that also says how to read the output:
`layout="nchw" | "nhwc" | "tokens"`, or `reshape=` any callable (like pytorch-grad-cam's
`reshape_transform`). Left to "auto", the layout is found, never guessed: channels-first and
channels-last feature maps are told apart by which dimensions match the image's grid (and, when
the shape alone cannot tell, by which dimensions follow the input's size); token sequences
(B, T, D) are read as their patch grid (`tokens.py`). What cannot be decided raises.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError, UnknownNameError
from attnscope.explain.attention import attention_modules
from attnscope.explain.engine import model_guard, run_model
from attnscope.explain.tokens import TokenLayout, detect_layout

LAYOUTS = ("auto", "nchw", "nhwc", "tokens")


@dataclass(frozen=True)
class Layer:
    """A layer (`at`: "auto", a dotted name or a module) and how to read its output.

    `layout`: "auto" (found from the output), "nchw" (B, C, h, w), "nhwc" (B, h, w, C) or "tokens"
    (B, T, D) read as the patch grid. `reshape`: a callable output → (B, C, h, w) instead, for
    what no layout describes (methods that replace the layer's output cannot invert it).
    """

    at: str | nn.Module = "auto"
    layout: str = "auto"
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"Layer layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.reshape is not None and not callable(self.reshape):
            raise InputError(f"Layer reshape must be a callable, got {type(self.reshape).__name__}")
        if self.reshape is not None and self.layout != "auto":
            raise InputError("give a Layer either layout= or reshape=, not both")


LayerSpec = str | nn.Module | Layer

# model -> {input shape: layer name}; "auto" traces one image once per model and input size.
_AUTO_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()
# (model class, layer, input shape, output shape) -> layout found by a probe at another input size, or None.
_PROBED: dict[tuple, str | None] = {}
# Modules whose output is never "the block" auto picks: they only pool, drop, flatten or reorder.
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                nn.AvgPool2d, nn.MaxPool2d)


def resolve_layer(model: nn.Module, layer: LayerSpec, images: torch.Tensor) -> tuple[str, nn.Module]:
    """`(dotted name, module)` for `layer`.

    "auto": the model's `cam_layer` attribute if it declares one, else the output of the last block
    that runs with a spatial output (B, C, h, w) or (B, h, w, C), h·w > 1 — the outermost module
    finishing there, never a branch inside it, and never a module that only pools, drops, flattens
    or permutes: `layer4` (ResNet), `features` (VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt),
    `trunk_output` (RegNet), `blocks` (MaxViT), `norm` (Swin, channels-last), `bn2` (timm's
    EfficientNet). A transformer whose last attention runs after every spatial output (ViT, DeiT)
    gets the input of its last attention layer (`token_layer`). Unknown names list the closest ones.
    """
    if isinstance(layer, Layer):
        layer = layer.at
    names = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return name, module
        raise InputError("the layer module given is not a submodule of the model")
    if not isinstance(layer, str):
        kind = type(layer).__name__
        raise InputError(f"layer must be 'auto', a dotted module name, an nn.Module or a Layer, got {kind}")
    if layer == "auto":
        layer = getattr(model, "cam_layer", None) or _auto_layer(model, images)
    if layer not in names or layer == "":
        raise UnknownNameError("layer", layer, [n for n in names if n])
    return layer, names[layer]


def _auto_layer(model: nn.Module, images: torch.Tensor) -> str:
    key = tuple(images.shape[1:])
    cached = _AUTO_CACHE.get(model, {}).get(key)
    if cached is None:
        cached = _AUTO_CACHE.setdefault(model, {})[key] = _trace_choice(model, images)
    return cached


def _trace_choice(model: nn.Module, images: torch.Tensor) -> str:
    size = tuple(images.shape[-2:])
    attention = {id(m) for _, m in attention_modules(model)}
    names = {id(m): n for n, m in model.named_modules() if n}
    events: list[tuple[str, str]] = []  # ("spatial" / "tokens", name) as modules finish; ("attention", name) at a start

    inside = [0]  # attention layers running now: what runs inside one (its bias tables, windows) is no block

    def done(module: nn.Module, _inputs, output) -> None:
        if id(module) in attention:
            inside[0] -= 1
            return
        if not isinstance(output, torch.Tensor) or output.shape[0] != 1 or inside[0]:
            return
        if output.dim() == 4 and _is_spatial(tuple(output.shape), size) and not _passes_through(module):
            events.append(("spatial", names[id(module)]))
        elif output.dim() == 3:
            events.append(("tokens", names[id(module)]))

    def start(module: nn.Module, _inputs) -> None:
        inside[0] += 1
        events.append(("attention", names[id(module)]))

    handles = [m.register_forward_hook(done) for n, m in model.named_modules() if n]
    handles += [m.register_forward_pre_hook(start) for n, m in model.named_modules() if id(m) in attention]
    _trace(model, images, handles)
    last = {kind: max((i for i, (k, _) in enumerate(events) if k == kind), default=-1)
            for kind in ("spatial", "attention")}
    if last["attention"] > last["spatial"]:  # a transformer on tokens: read what enters the last attention
        before = [name for kind, name in events[: last["attention"]] if kind == "tokens"]
        if not before:
            raise InputError("layer='auto' found no token layer (B, T, D) before the last attention; pass layer=")
        return before[-1]
    if last["spatial"] < 0:
        raise InputError("layer='auto' found no module with a spatial output (B, C, h, w) or (B, h, w, C); "
                         "pass layer= a module name")
    return events[last["spatial"]][1]


def token_layer(model: nn.Module, images: torch.Tensor) -> str:
    """The module whose tokens (B, T, D) feed the last attention layer to run (the block's first norm).

    In a CLS-token ViT the last block's patch outputs never reach the head, so Grad-CAM reads the
    input of the last attention instead (as pytorch-grad-cam advises for timm's `blocks[-1].norm1`).
    """
    return _trace_choice(model, images)


def _passes_through(module: nn.Module) -> bool:
    return isinstance(module, PASS_THROUGH) or type(module).__name__ == "Permute"


def _trace(model: nn.Module, images: torch.Tensor, handles: list) -> None:
    """Run the first image through `model` with the given hooks, then remove them (also on error).

    Eval mode and no gradients: the trace must not touch BatchNorm statistics.
    """
    try:
        with torch.no_grad(), model_guard(model):
            run_model(model, images[:1])
    finally:
        for h in handles:
            h.remove()


# --- layouts ------------------------------------------------------------------------------------


def _grid_fits(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether an h × w grid is the image's (H, W) at one stride s ≥ 1 (each side within one cell)."""
    (height, width), lo, hi = size, 1.0, float("inf")
    for cells, extent in ((h, height), (w, width)):
        lo = max(lo, extent / (cells + 1))
        hi = min(hi, extent / (cells - 1) if cells > 1 else float("inf"))
    return lo <= hi


def fitting_layouts(shape: tuple[int, ...], size: tuple[int, int]) -> list[str]:
    """The layouts ("nchw", "nhwc") under which a 4-D output `shape` is a grid of an image of `size`."""
    _, d1, d2, d3 = shape
    return [name for name, (h, w) in (("nchw", (d2, d3)), ("nhwc", (d1, d2))) if _grid_fits(h, w, size)]


def _is_spatial(shape: tuple[int, ...], size: tuple[int, int]) -> bool:
    _, d1, d2, d3 = shape
    fits = fitting_layouts(shape, size) or ["nchw"]
    return any((d2 * d3 if name == "nchw" else d1 * d2) > 1 for name in fits)


@dataclass(frozen=True)
class Reading:
    """How the chosen layer's output becomes a feature map (N, C, h, w) and back."""

    layout: str  # "nchw" | "nhwc" | "tokens" | "reshape"
    tokens: TokenLayout | None = None
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        """The layer's output (or its gradient) as (N, C, h, w)."""
        if self.layout == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            return self.tokens.to_feature_map(t)
        if self.layout == "reshape":
            out = self.reshape(t)
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != t.shape[0]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise InputError(f"Layer reshape= must return (B, C, h, w) for an output {tuple(t.shape)}, got {shape}")
            return out
        return t

    def from_map(self, features: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Feature maps (N, C, h, w) back to the layer's own layout; `raw` is one image's original output."""
        if self.layout == "nhwc":
            return features.permute(0, 2, 3, 1)
        if self.layout == "tokens":
            return self.tokens.to_tokens(features, raw)
        if self.layout == "reshape":
            raise InputError("this method replaces the layer's output, and a Layer reshape= cannot be inverted; "
                             "give the Layer a layout= instead")
        return features


def reading(model: nn.Module, spec: LayerSpec, output: torch.Tensor, name: str, images: torch.Tensor,
            module: nn.Module) -> Reading:
    """How to read `output`, the chosen layer's output for `images`: as declared by a `Layer`, else found."""
    declared = spec if isinstance(spec, Layer) else Layer()
    if declared.reshape is not None:
        return Reading("reshape", reshape=declared.reshape)
    size = tuple(images.shape[-2:])
    layout = declared.layout
    if layout == "auto":
        layout = {3: "tokens", 4: None}.get(output.dim(), "other")
        if layout is None:
            layout = _spatial_layout(model, module, name, tuple(output.shape), images)
    if layout == "tokens":
        if output.dim() != 3:
            raise InputError(f"layer {name!r} outputs {tuple(output.shape)}, not tokens (B, T, D)")
        return Reading("tokens", tokens=detect_layout(model, output.shape[1], size))
    if layout in ("nchw", "nhwc") and output.dim() == 4:
        return Reading(layout)
    raise InputError(f"the chosen layer {name!r} outputs {tuple(output.shape)}, not a spatial map (B, C, h, w) or "
                     "(B, h, w, C) or tokens (B, T, D); choose another layer or pass Layer(..., reshape=)")


def _spatial_layout(model: nn.Module, module: nn.Module, name: str, shape: tuple[int, ...],
                    images: torch.Tensor) -> str:
    """"nchw" or "nhwc" for a 4-D output; when the shape fits both or neither, the dims that follow the input size."""
    fits = fitting_layouts(shape, tuple(images.shape[-2:]))
    if len(fits) == 1:
        return fits[0]
    key = (type(model).__qualname__, name, tuple(images.shape[1:]), shape[1:])  # also for deep copies
    if key not in _PROBED:
        other = _shape_at_another_size(model, module, images)
        moved = None if other is None else tuple(a != b for a, b in zip(shape[1:], other[1:], strict=True))
        _PROBED[key] = {(False, True, True): "nchw", (True, True, False): "nhwc"}.get(moved)
    if _PROBED[key] is not None:
        return _PROBED[key]
    raise InputError(f"cannot tell whether layer {name!r}'s output {shape} is (B, C, h, w) or (B, h, w, C); pass "
                     f"layer=Layer({name!r}, layout='nchw' or 'nhwc')")


def _shape_at_another_size(model: nn.Module, module: nn.Module, images: torch.Tensor) -> tuple[int, ...] | None:
    """The layer's output shape for the first image at twice its size; None when the model refuses that size."""
    seen: list[tuple[int, ...]] = []
    big = F.interpolate(images[:1], scale_factor=2.0, mode="bilinear", align_corners=False)
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)) if not seen else None)
    try:
        _trace(model, big, [handle])
    except (InputError, RuntimeError, ValueError, AssertionError):  # a model that takes one size only
        return None
    return seen[0] if seen and len(seen[0]) == 4 else None
