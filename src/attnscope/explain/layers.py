"""Which layer a layer-based method (the CAM family) reads: "auto", a dotted name, or a module."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from attnscope.errors import InputError, UnknownNameError

LayerSpec = str | nn.Module

# model -> {input shape: layer name}; "auto" traces one image once per model and input size.
_AUTO_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def resolve_layer(model: nn.Module, layer: LayerSpec, images: torch.Tensor) -> tuple[str, nn.Module]:
    """`(dotted name, module)` for `layer`.

    "auto": the model's `cam_layer` attribute if it declares one, else the outermost module that
    contains the last `nn.Conv2d` to run and outputs a spatial map (B, C, h, w) with h·w > 1:
    `features` for SmallCNN, VGG, DenseNet, MobileNet, EfficientNet and ConvNeXt, `layer4` for
    ResNet. Pooling after the last conv block (VGG's `avgpool`) is not picked. A model without
    convolutions gets the last module to output a spatial map. Unknown names raise listing the
    closest module names.
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

    handles = [m.register_forward_hook(hook) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in handles:
            h.remove()
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
