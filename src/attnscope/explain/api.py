"""`explain()`: any registered method, on any batch, from shared passes; it returns an `Explanation`.

A method is a pure function of named tensors (`explain.method`); `explain` checks what it was
given, runs the shared pass once for the union of what the methods read (`explain.context.Pass`),
calls each method on its inputs, and brings every map to the input's resolution — folded back to
(B, K, H, W) when K targets per image were asked for. The model is left exactly as found.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import budget, engine, guards
from attnscope.explain.context import Pass
from attnscope.explain.layers import LayerSpec
from attnscope.explain.method import Method, MethodResult, Result
from attnscope.explain.targets import TargetSpec
from attnscope.explain.wrappers import Wrapped, explain_wrapped, wrapped
from attnscope.maps import AttentionMap, Explanation, SequenceMap, upsample, upsample_density
from attnscope.modules import device_of, unwrap
from attnscope.registry import METHODS

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@guards.outside_inference_mode  # leaves torch.inference_mode() for its pass (explain.guards)
def explain(
    model: nn.Module,
    images: torch.Tensor,
    methods: str | Sequence[str] = ("gradcam",),
    targets: TargetSpec = None,
    layer: LayerSpec = "auto",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    differentiable: bool = False,
    output: engine.OutputSpec = None,
) -> Explanation:
    """Attention maps of `model` for `images` (B, C, H, W): an `Explanation`, one `AttentionMap` per method.

    `targets`: None (predicted class), int, LongTensor[B], LongTensor[B, K] (K targets per image:
    maps (B, K, H, W)), or callable(output) → scores (B,) or (B, K).
    `layer`: "auto", a dotted module name or a module (for layer-based methods).
    `options`: per-method keyword options, e.g. `{"ig": {"steps": 64}}`.
    `batch_size`: explain in chunks of this many images (same maps, bounded memory).
    `differentiable`: keep the graph, so a loss on the maps (or on `.logits`) trains the model; the
    model keeps its training mode for the call (a training step's forward).
    `output`: what the targets score when the model does not return logits (`engine.select_output`).
    A name `WRAPPER:METHOD` (`smoothgrad:saliency`, `augsmooth:gradcam`, `fuse:layercam`) explains
    variants of the call and combines them (`explain.wrappers`). Methods asked together share their
    forward and backward passes. The model is left exactly as found;
    concurrent calls on one model from several threads run one after the other.
    """
    specs = _methods(methods)
    options = _options(specs, options)
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images = _checked_images(images, model)
    if differentiable:
        fixed = [s.name for s in specs if not s.differentiable]
        if fixed:
            raise NotApplicableError(f"differentiable=True: {', '.join(fixed)} run(s) the model again without a "
                                     f"graph; differentiable methods: {', '.join(differentiable_methods())}")
    core = unwrap(model)
    for spec in specs:
        reason = spec.applies(core)
        if reason is not None:
            usable = [m for m in METHODS if METHODS.get(m).applies(core) is None]
            raise NotApplicableError(f"method {spec.name!r} does not apply to this model: {reason}. "
                                     f"Methods that do: {', '.join(usable)}")
    free = [s.name for s in specs if not s.uses_pass]
    if free and targets is not None:
        raise InputError(f"{', '.join(free)} explain(s) what the model generates and take(s) no targets; "
                         "to explain given captions pass options={'sat': {'captions': [...]}}")
    if isinstance(targets, torch.Tensor) and (targets.dim() not in (1, 2) or targets.shape[0] != images.shape[0]):
        raise InputError(f"target tensor has shape {tuple(targets.shape)} but the batch has {images.shape[0]} images")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if batch_size < images.shape[0]:
            parts = [explain(model, images[i : i + batch_size], [s.name for s in specs],
                             targets[i : i + batch_size] if isinstance(targets, torch.Tensor) else targets,
                             layer, options, None, differentiable, output)
                     for i in range(0, images.shape[0], batch_size)]
            return Explanation.cat(parts)
    with _lock(model), engine.model_guard(model, differentiable):
        runs = any(s.uses_pass for s in specs)  # only generative methods (sat): no shared pass
        needs = frozenset().union(*(s.needs for s in specs))
        if runs and not differentiable:  # refused before it runs, with the estimate (`explain.budget`)
            budget.check_pass(core, images, device_of(model), bool(needs & GRADIENT_NEEDS))
        shared = Pass(model, images.to(device_of(model)), targets, layer,
                      needs, differentiable, output, runs)
        maps: dict[str, AttentionMap] = {}
        for spec in specs:
            if isinstance(spec, Wrapped):
                continue
            result = spec.run(shared.inputs(spec.inputs), options.get(spec.name, {}))
            maps.update(_as_maps(spec, result, shared, options.get(spec.name, {})))
        wrapped_specs = [s for s in specs if isinstance(s, Wrapped)]
        if wrapped_specs:  # variants of the call, explained with the targets resolved on the clean images
            resolved = targets if shared.target.fn is not None else shared.capture.table
            again = lambda x, names, t, lay, opts: explain(model, x, names, t, lay, opts, None, False, output)
            maps.update(explain_wrapped(again, wrapped_specs, options, shared.images, resolved, layer))
            maps = {s.name: maps[s.name] for s in specs if s.name in maps} | maps  # the order asked for
        if not runs:
            return Explanation(maps, None, None)
        return Explanation(maps, shared.capture.logits, shared.capture.table)


def method_spec(name: str) -> Method | Wrapped:
    """The method a name stands for: a registered method or a `WRAPPER:METHOD`; unknown names raise."""
    return wrapped(name) or METHODS.get(name)


def list_methods(kind: str | None = None) -> dict[str, str]:
    """Registered methods and their kind, optionally only those of `kind`."""
    return {n: METHODS.get(n).kind for n in METHODS if kind is None or METHODS.get(n).kind == kind}


def differentiable_methods() -> list[str]:
    """The methods whose maps can keep their graph (`explain(..., differentiable=True)`)."""
    return [n for n in METHODS if METHODS.get(n).differentiable]


def _as_maps(spec: Method, result: MethodResult, shared: Pass, options: Mapping[str, Any]) -> dict[str, AttentionMap]:
    if isinstance(result, (AttentionMap, SequenceMap)):
        return {spec.name: result}
    items = result.items() if isinstance(result, Mapping) else [(spec.name, result)]
    keep = (lambda t: t) if shared.differentiable else (lambda t: t.detach())
    reads_layer = bool(spec.needs & {"layer", "layer_grad"})
    cap, size = shared.capture, shared.size
    out = {}
    for key, value in items:
        part = value if isinstance(value, Result) else Result(value)
        low = keep(part.values)
        low = low if low.dtype == torch.float64 else low.float()
        at_input = tuple(low.shape[-2:]) == size
        resize = upsample_density if part.resize == "density" else upsample
        values = low if at_input else resize(low, size)
        if cap.per_image is not None:  # rows back to (B, K, ...)
            values = values.view(-1, cap.per_image, *values.shape[1:])
            low = low.view(-1, cap.per_image, *low.shape[1:])
        out[key] = AttentionMap(
            values=values, method=key, targets=cap.table,
            layer=part.layer or (shared.layer[0] if reads_layer else None),
            lowres=None if at_input else low,
            meta={**spec.defaults, **options, **part.meta},
        )
    return out


def _methods(methods: object) -> list[Method]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise InputError(f"methods must be a method name or a sequence of names, got {methods!r}")
    if not methods:
        raise InputError(f"no methods asked for; known: {', '.join(METHODS)}")
    return [method_spec(m) for m in dict.fromkeys(methods)]


def _options(specs: Sequence[Method], options: object) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(f"options must be a dict of method → {{option: value}}, got {type(options).__name__}")
    asked = {s.name: s for s in specs}
    for name in options:
        if name not in asked:
            raise InputError(f"options given for {name!r}, which is not among the methods asked for: {sorted(asked)}")
    return {name: asked[name].checked_options(opts) for name, opts in options.items()}


GRADIENT_NEEDS = frozenset({"layer_grad", "input_grad", "guided_grad", "attention_grad", "bias_grad"})
LOSSLESS = {(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float16, torch.float64),
            (torch.bfloat16, torch.float64), (torch.float32, torch.float64)}


def _checked_images(images: object, model: nn.Module) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a float tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        hint = " (for one image use images[None])" if images.dim() == 3 else ""
        raise InputError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise InputError(f"images must be a floating point tensor, got {images.dtype}")
    if images.shape[0] == 0:
        raise InputError("images is an empty batch")
    if not torch.isfinite(images).all():
        raise InputError("images contain NaN or infinite values")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), images.dtype)
    if images.dtype != dtype:
        if (images.dtype, dtype) not in LOSSLESS:
            raise InputError(f"images are {images.dtype} and the model is {dtype}: cast the images to the "
                             f"model's dtype (images.to({dtype})) or the model to theirs")
        images = images.to(dtype)
    return images


def _lock(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())
