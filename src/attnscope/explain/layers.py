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

from attnscope.errors import InputError, NotApplicableError, UnknownNameError
from attnscope.explain import engine
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

# model -> {input shape: (layer name, why)}; "auto" traces one image once per model and input size.
_AUTO_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[str, str]]] = weakref.WeakKeyDictionary()
# (model class, layer, input shape, output shape) -> layout found by a probe at another input size, or None.
_PROBED: dict[tuple, str | None] = {}
# Modules whose output is never "the block" auto picks: they only pool, drop, flatten or reorder.
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.AvgPool1d, nn.MaxPool1d)


def resolve_layer(model: nn.Module, layer: LayerSpec, images: torch.Tensor) -> tuple[str, nn.Module]:
    """`(dotted name, module)` for `layer`; "auto" is decided by `auto_layer` (its docstring gives the rule).
    Unknown names list the closest ones."""
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
        layer = auto_layer(model, images)[0]
    if layer not in names or layer == "":
        raise UnknownNameError("layer", layer, [n for n in names if n])
    return layer, names[layer]


def auto_layer(model: nn.Module, images: torch.Tensor) -> tuple[str, str]:
    """(the layer `layer="auto"` picks for `model` on images of this size, why — one line).

    Decided from one traced image, from the model's structure, never from names: the model's `cam_layer`
    if it declares one; else, of the modules that run once and whose output is the image's grid — spatial
    (B, C, h, w) / (B, h, w, C) or tokens (B, T, D) — never a branch inside a block nor a module that only
    pools, drops, flattens or permutes:
    - a detector's backbone feeds a feature pyramid (a module returning maps of several sizes): the last
      block before it, the backbone's last stage, which every pyramid level and box reads;
    - a segmenter's output is a map: the last block before the head (the first module whose output has
      the output's channels), the backbone's last stage;
    - a transformer whose last attention runs after every spatial output: if its head reads the CLS token
      only (found by one backward, `windowed.read_tokens`), the input of its last attention layer — the
      last block's patch outputs never reach the head; if it pools its tokens, the last token block;
    - otherwise the last spatial block before global pooling: `layer4` (ResNet), `features` (VGG,
      DenseNet, MobileNet, EfficientNet, ConvNeXt), `trunk_output` (RegNet), `norm` (Swin).
    """
    declared = getattr(model, "cam_layer", None)
    if declared:
        return declared, "declared by the model (`cam_layer`)"
    key = tuple(images.shape[1:])
    cached = _AUTO_CACHE.setdefault(model, {}).get(key)
    if cached is None:
        cached = _AUTO_CACHE[model][key] = _Trace(model, images).choice()
    return cached


def layer_choice(model: nn.Module, images: torch.Tensor, name: str) -> str:
    """Why layer `name` was chosen (one line): the rule of `auto_layer` if "auto" picked it for these images, else
    "given" (read from the cache of "auto": never traces)."""
    choice = getattr(model, "cam_layer", None)
    if choice == name:
        return "declared by the model (`cam_layer`)"
    picked = _AUTO_CACHE.get(model, {}).get(tuple(images.shape[1:]))
    return picked[1] if picked is not None and picked[0] == name else "given"


def token_layer(model: nn.Module, images: torch.Tensor) -> str:
    """The layer "auto" picks (for a CLS-token ViT: the module whose tokens feed the last attention layer)."""
    return auto_layer(model, images)[0]


@dataclass
class _Event:
    kind: str  # "spatial" | "tokens" | "attention" | "pyramid"
    name: str
    step: int  # when it finished (its start, for "attention")
    started: int = 0


class _Trace:
    """One traced image: what ran, in which order, with which output."""

    def __init__(self, model: nn.Module, images: torch.Tensor) -> None:
        self.model, self.images, self.size = model, images, tuple(images.shape[-2:])
        self.events: list[_Event] = []
        self.runs: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # output shape of each spatial / token event
        self.output: object = None
        self._run()

    def _run(self) -> None:
        attention = {id(m) for _, m in attention_modules(self.model)}
        names = {id(m): n for n, m in self.model.named_modules() if n}
        started: dict[str, int] = {}
        inside, step = [0], [0]  # attention layers running now: what runs inside one is no block

        def start(module: nn.Module, _inputs) -> None:
            step[0] += 1
            name = names[id(module)]
            started.setdefault(name, step[0])
            if id(module) in attention:
                inside[0] += 1
                self.events.append(_Event("attention", name, step[0]))

        def done(module: nn.Module, _inputs, output) -> None:
            step[0] += 1
            name = names[id(module)]
            self.runs[name] = self.runs.get(name, 0) + 1
            if id(module) in attention:
                inside[0] -= 1
            elif not inside[0]:
                kind = self._kind(module, output)
                if kind is not None:
                    self.events.append(_Event(kind, name, step[0], started[name]))
                    if isinstance(output, torch.Tensor):
                        self.shapes[name] = tuple(output.shape)

        handles = [h for n, m in self.model.named_modules() if n
                   for h in (m.register_forward_pre_hook(start), m.register_forward_hook(done))]
        self.output = _trace(self.model, self.images, handles)

    def _kind(self, module: nn.Module, output: object) -> str | None:
        if isinstance(output, torch.Tensor):
            if output.shape[0] != 1 or _passes_through(module):
                return None
            if output.dim() == 4 and _is_spatial(tuple(output.shape), self.size):
                return "spatial"
            if output.dim() == 3 and _is_token_grid(self.model, output.shape[1], self.size):
                return "tokens"
            return None
        maps = {tuple(t.shape[-2:]) for t in _tensors(output) if t.dim() == 4 and t.shape[0] == 1
                and _is_spatial(tuple(t.shape), self.size)}
        return "pyramid" if len(maps) >= 2 else None

    def choice(self) -> tuple[str, str]:
        events, why = self._before_head()
        events = [e for e in events if e.kind == "attention" or self.runs.get(e.name, 0) == 1]
        last = {kind: max((i for i, e in enumerate(events) if e.kind == kind), default=-1)
                for kind in ("spatial", "tokens", "attention")}
        if last["attention"] > last["spatial"] and last["tokens"] >= 0:
            cls_only = self._reads_cls_only(self.shapes[events[last["tokens"]].name][1])
            if cls_only is not None:
                return self._token_choice(events, last, cls_only)
        if last["spatial"] < 0:
            raise InputError("layer='auto' found no module with a spatial output (B, C, h, w) or (B, h, w, C) or "
                             "a token grid (B, T, D) that runs once; pass layer= a module name")
        return events[last["spatial"]].name, why

    def _before_head(self) -> tuple[list[_Event], str]:
        """The events before a detector's feature pyramid or a segmenter's head, and what that cut means."""
        pyramid = next((e for e in self.events if e.kind == "pyramid"), None)
        if pyramid is not None:
            return [e for e in self.events if e.step < pyramid.step and e.kind != "pyramid"], \
                f"the backbone's last stage: the last block before the feature pyramid ({pyramid.name!r})"
        out = engine.select_output(self.output)
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            channels = out.shape[1]
            heads = [e for e in self.events if e.kind == "spatial" and self._channels(e.name) == channels]
            if heads:
                head = min(heads, key=lambda e: e.started)
                return [e for e in self.events if e.step < head.started], \
                    f"the backbone's last stage: the last block before the segmentation head ({head.name!r})"
        return [e for e in self.events if e.kind != "pyramid"], "the last spatial block before global pooling"

    def _channels(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else shape[1]

    def _reads_cls_only(self, tokens: int) -> bool | None:
        """Whether the output reads only the extra tokens (CLS) of the last attention layer; None if unknown.

        Unknown readout (an output that is no tensor, a zero head): a model with extra tokens before the
        grid of its last token layer (`tokens` of them) is taken to read its CLS, one without to pool."""
        from attnscope.explain.windowed import read_tokens

        try:
            mask = read_tokens(self.model, self.images)
        except (InputError, NotApplicableError):
            return None
        if mask is None or not mask.any():
            return tokens - _grid_tokens(self.model, tokens, self.size) > 0
        first_grid = int(mask.shape[0]) - _grid_tokens(self.model, int(mask.shape[0]), self.size)
        return not bool(mask[first_grid:].any())

    def _token_choice(self, events: list[_Event], last: dict[str, int], cls_only: bool) -> tuple[str, str]:
        if cls_only:
            before = [e.name for e in events[: last["attention"]] if e.kind == "tokens"]
            if not before:
                raise InputError("layer='auto' found no token layer (B, T, D) before the last attention; pass layer=")
            return before[-1], ("the input of the last attention layer: the head reads the CLS token, so the last "
                                "block's patch outputs never reach it")
        grids = [i for i, e in enumerate(events) if e.kind in ("tokens", "spatial")]
        return events[grids[-1]].name, "the last token block: the head pools every token"


def _tensors(output: object) -> list[torch.Tensor]:
    """The tensors of a module's collection output (list, tuple, dict, a Hugging Face ModelOutput), one level deep."""
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) else ()
    found = []
    for item in items:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found.extend(t for t in item if isinstance(t, torch.Tensor))
    return found


def _is_token_grid(model: nn.Module, tokens: int, size: tuple[int, int]) -> bool:
    """Whether `tokens` tokens are a grid of the image (after the extra tokens the model declares, or 0 / 1)."""
    return _grid_tokens(model, tokens, size) > 0


def _grid_tokens(model: nn.Module, tokens: int, size: tuple[int, int]) -> int:
    """How many of `tokens` form the image's grid (the rest are extra tokens before it); 0 if none fits."""
    try:
        layout = detect_layout(model, tokens, size)
    except InputError:
        return 0
    h, w = layout.grid
    return h * w if h * w > 1 else 0


def _passes_through(module: nn.Module) -> bool:
    return isinstance(module, PASS_THROUGH) or type(module).__name__ == "Permute"


def _trace(model: nn.Module, images: torch.Tensor, handles: list) -> object:
    """Run the first image through `model` with the given hooks, then remove them (also on error); its output.

    Eval mode and no gradients: the trace must not touch BatchNorm statistics.
    """
    try:
        with torch.no_grad(), model_guard(model):
            return run_model(model, images[:1])
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
