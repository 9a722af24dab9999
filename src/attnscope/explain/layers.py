"""Which layer a layer-based method (the CAM family) reads: "auto", a dotted name, or a module."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from attnscope.errors import InputError, UnknownNameError
from attnscope.explain.attention import attention_modules
from attnscope.explain.engine import model_guard, run_model

LayerSpec = str | nn.Module

# model -> {input shape: layer name}; "auto" traces one image once per model and input size.
_AUTO_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def resolve_layer(model: nn.Module, layer: LayerSpec, images: torch.Tensor) -> tuple[str, nn.Module]:
    """`(dotted name, module)` for `layer`.

    "auto": the model's `cam_layer` attribute if it declares one, else the outermost module that
    contains the last `nn.Conv2d` to run and outputs a spatial map (B, C, h, w) with h·w > 1:
    `features` for SmallCNN, VGG, DenseNet, MobileNet, EfficientNet and ConvNeXt, `layer4` for
    ResNet. Pooling after the last conv block (VGG's `avgpool`) is not picked. A model without
    convolutions gets the last module to output a spatial map. A transformer (a model with
    attention layers) gets the input of its last attention layer (`token_layer`). Unknown names
    raise listing the closest module names.
    """
    names = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return name, module
        raise InputError("the layer module given is not a submodule of the model")
    if not isinstance(layer, str):
        kind = type(layer).__name__
        raise InputError(f"layer must be 'auto', a dotted module name or an nn.Module, got {kind}")
    if layer == "auto":
        layer = getattr(model, "cam_layer", None) or _auto_layer(model, images)
    if layer not in names or layer == "":
        raise UnknownNameError("layer", layer, [n for n in names if n])
    return layer, names[layer]


def _auto_layer(model: nn.Module, images: torch.Tensor) -> str:
    key = tuple(images.shape[1:])
    cached = _AUTO_CACHE.get(model, {}).get(key)
    if cached is not None:
        return cached
    if attention_modules(model):
        _AUTO_CACHE.setdefault(model, {})[key] = token_layer(model, images)
        return _AUTO_CACHE[model][key]
    spatial: set[str] = set()
    finished: list[str] = []  # spatial outputs, in the order their modules finished
    convs: list[str] = []
    names = {id(m): n for n, m in model.named_modules() if n}

    def hook(module: nn.Module, _inputs, output) -> None:
        name = names[id(module)]
        if isinstance(module, nn.Conv2d):
            convs.append(name)
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            spatial.add(name)
            finished.append(name)

    _trace(model, images, [m.register_forward_hook(hook) for n, m in model.named_modules() if n])
    if not finished:
        raise InputError(
            "layer='auto' found no module with a spatial output (B, C, h, w); pass layer= a module name"
        )
    chosen = finished[-1]
    if convs:
        parts = convs[-1].split(".")
        ancestors = [".".join(parts[: i + 1]) for i in range(len(parts))]  # outermost first
        chosen = next((a for a in ancestors if a in spatial), chosen)
    _AUTO_CACHE.setdefault(model, {})[key] = chosen
    return chosen


def token_layer(model: nn.Module, images: torch.Tensor) -> str:
    """The module whose tokens (B, T, D) feed the last attention layer to run (the block's first norm).

    In a CLS-token ViT the last block's patch outputs never reach the head, so Grad-CAM reads the
    input of the last attention instead (as pytorch-grad-cam advises for timm's `blocks[-1].norm1`).
    """
    attention = {id(m) for _, m in attention_modules(model)}
    names = {id(m): n for n, m in model.named_modules() if n}
    events: list[tuple[str, str]] = []  # ("done", name) for token outputs, ("attention", name) when one starts

    def done(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 3:
            events.append(("done", names[id(module)]))

    def start(module: nn.Module, _inputs) -> None:
        events.append(("attention", names[id(module)]))

    handles = [m.register_forward_hook(done) for n, m in model.named_modules() if n and id(m) not in attention]
    handles += [m.register_forward_pre_hook(start) for n, m in model.named_modules() if id(m) in attention]
    _trace(model, images, handles)
    last = max((i for i, (kind, _) in enumerate(events) if kind == "attention"), default=None)
    before = [name for kind, name in events[: last or 0] if kind == "done"]
    if not before:
        raise InputError("layer='auto' found no token layer (B, T, D) before the last attention; pass layer=")
    return before[-1]


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
