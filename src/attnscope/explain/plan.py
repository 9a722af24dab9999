"""One explain call: checked, planned once, then run — the shared pass at one visible point.

`explain_with(how, model, images, targets)` is what `Explainer.__call__` (and so `explain`) does:

    check      the model, the images (dtype, shape, finite), the targets against the methods
    plan       `Plan`: the plain and the wrapped methods, the needs of the shared pass as a set, whether
               a pass runs at all, the chunks of `batch_size` images (more than one: each is a call)
    guard      one call per model at a time (a lock), the model in eval mode with frozen parameters
               (`model_guard`), the plan's layer resolved (`Plan.resolved`), the memory check
    pass       `context.shared_pass`: ONE forward (+ the backward passes the needs ask for) by
               `engine.capture`, the chosen layer's output read as a feature map
    methods    each plain method on its inputs from the pass; the wrapped methods over variants of the call
    maps       every result brought to the input's resolution, (B, K, H, W) for K targets
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import budget, guards, progress
from attnscope.explain.context import Pass, no_pass, own_pass, shared_pass
from attnscope.explain.layers import LayerSpec, layer_choice, resolve_layer
from attnscope.explain.method import Method, MethodResult, Result
from attnscope.explain.run import OutputSpec, model_guard
from attnscope.explain.targets import TargetSpec, by_name
from attnscope.explain.wrappers import Wrapped, explain_wrapped
from attnscope.maps import AttentionMap, Explanation, SequenceMap, Upsampled, upsample, upsample_density
from attnscope.modules import all_finite, class_names, device_of, unwrap
from attnscope.registry import METHODS


class Explainer(Protocol):
    """What a call reads of its `explain.spec.Explainer` (which imports this module, not the other way round)."""

    methods: tuple[str, ...]
    layer: LayerSpec
    options: Mapping[str, Mapping[str, Any]]
    batch_size: int | None
    output: OutputSpec
    differentiable: bool

    @property
    def specs(self) -> list[Method | Wrapped]: ...

    def replace(self, **changes: Any) -> Explainer: ...

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: TargetSpec = None) -> Explanation: ...

GRADIENT_NEEDS = frozenset({"layer_grad", "input_grad", "guided_grad", "attention_grad", "bias_grad"})
LOSSLESS = {(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float16, torch.float64),
            (torch.bfloat16, torch.float64), (torch.float32, torch.float64)}
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Plan:
    """What one call does, decided before anything runs."""

    plain: tuple[Method, ...]  # computed from the shared pass
    wrapped: tuple[Wrapped, ...]  # WRAPPER:METHOD: explained over variants of the call (`explain.wrappers`)
    needs: frozenset[str]  # what the shared pass captures: the union of the plain methods' needs
    runs: bool  # whether a shared pass runs (False: generative methods only, e.g. `sat`)
    chunks: tuple[slice, ...]  # the images explained one part after the other (`batch_size`)
    layer: tuple[str, nn.Module] | None = None  # the chosen layer (name, module), once resolved, where read

    @property
    def gradients(self) -> bool:
        """Whether the shared pass has a backward."""
        return bool(self.needs & GRADIENT_NEEDS)

    def resolved(self, model: nn.Module, images: torch.Tensor, layer: LayerSpec) -> Plan:
        """The plan with the chosen layer resolved, where a method reads it ("auto": traced once per model and
        input size, in eval mode)."""
        if "layer" not in self.needs:
            return self
        return dataclasses.replace(self, layer=resolve_layer(unwrap(model), layer, images))


def plan(how: Explainer, batch: int) -> Plan:
    """The plan of `how` for a batch of `batch` images."""
    specs = how.specs
    plain = tuple(s for s in specs if not isinstance(s, Wrapped))
    size = how.batch_size or batch
    return Plan(plain, tuple(s for s in specs if isinstance(s, Wrapped)),
                frozenset().union(*(s.needs for s in plain)), any(s.uses_pass for s in specs),
                tuple(slice(i, i + size) for i in range(0, batch, size)))


@guards.outside_inference_mode  # leaves torch.inference_mode() for the call (explain.guards)
def explain_with(how: Explainer, model: nn.Module, images: torch.Tensor, targets: TargetSpec) -> Explanation:
    """The maps of `model` for `images` as `how` says, for `targets` (see `explain`)."""
    from attnscope.explain import multimodal

    if multimodal.bound_target(model, targets, [s.uses_pass for s in how.specs]):  # texts, captions: bound to them
        return multimodal.explain_bound(how, model, images, targets)
    names = class_names(model) if isinstance(model, nn.Module) else None
    targets = by_name(targets, names, images.shape[0] if isinstance(images, torch.Tensor) else 0)
    images = _checked(how, model, images, targets)
    todo = plan(how, images.shape[0])
    if len(todo.chunks) > 1:
        whole = how.replace(batch_size=None)
        return Explanation.cat([whole(model, images[part], targets[part] if isinstance(targets, torch.Tensor)
                                      else targets) for part in todo.chunks])
    images = images.to(device_of(model))
    with _lock(model), model_guard(model, how.differentiable):
        todo = todo.resolved(model, images, how.layer)
        if todo.runs and not how.differentiable:  # refused before it runs, with the estimate (`explain.budget`)
            budget.check_pass(unwrap(model), images, images.device, todo.gradients)
        if todo.runs:
            progress.inputs(images.shape[0])
        shared = _by_the_method(how, todo, model, images, targets) if todo.runs else None
        if shared is None:
            shared = shared_pass(model, images, targets, todo.needs, todo.layer, how.layer, how.differentiable,
                                 how.output) if todo.runs else no_pass(model, images, todo.needs, how.differentiable,
                                                                       how.output)  # THE shared pass
        maps: dict[str, AttentionMap] = {}
        for spec in todo.plain:
            options = how.options.get(spec.name, {})
            progress.method("start", spec.name)
            maps.update(_as_maps(spec, spec.run(shared.inputs(spec.inputs), options), shared, options))
            progress.method("done", spec.name, images.shape[0])
        if todo.wrapped:
            maps = _with_wrapped(how, todo, model, shared, targets, maps)
    if not todo.runs:
        return Explanation(maps, None, None, class_names=names)
    return Explanation(maps, shared.capture.logits, shared.capture.table, class_names=names)


def _by_the_method(how: Explainer, todo: Plan, model: nn.Module, images: torch.Tensor, targets: TargetSpec
                   ) -> Pass | None:
    """The call's pass from its one method's own forward (`Method.own_pass`, e.g. LeGrad's forward with gradients),
    where the call has one method that has one, one target per image known before the forward (None, an int, a
    LongTensor[B]) and no differentiable maps; else None (the shared pass runs)."""
    one = targets is None or isinstance(targets, int) and not isinstance(targets, bool) or \
        isinstance(targets, torch.Tensor) and targets.dim() == 1
    if len(todo.plain) != 1 or todo.wrapped or how.differentiable or not one or todo.plain[0].own_pass is None:
        return None
    spec = todo.plain[0]
    own = spec.own_pass(model, images, targets, how.output, how.options.get(spec.name, {}))
    return None if own is None else own_pass(model, images, todo.needs, how.output, own)


def _with_wrapped(how: Explainer, todo: Plan, model: nn.Module, shared: Pass, targets: TargetSpec,
                  maps: dict[str, AttentionMap]) -> dict[str, AttentionMap]:
    """`maps` with the wrapped methods' added: variants of the call, with the targets resolved on the clean images."""
    resolved = targets if shared.target.fn is not None else shared.capture.table

    def again(x: torch.Tensor, names: Sequence[str], t: Any, layer: Any, opts: Any) -> Explanation:
        return how.replace(methods=tuple(names), layer=layer, options=opts, batch_size=None,
                           differentiable=False)(model, x, t)

    names = [w.name for w in todo.wrapped]
    for name in names:
        progress.method("start", name)
    with progress.muted():  # the variants' own calls are this method's work
        maps.update(explain_wrapped(again, todo.wrapped, how.options, shared.images, resolved, how.layer))
    for name in names:
        progress.method("done", name, shared.images.shape[0])
    return {s: maps[s] for s in how.methods if s in maps} | maps  # the order asked for


def _as_maps(spec: Method, result: MethodResult, shared: Pass, options: Mapping[str, Any]) -> dict[str, AttentionMap]:
    """A method's result as maps at the input's resolution, (B, K, H, W) for K targets."""
    if isinstance(result, (AttentionMap, SequenceMap)):
        return {spec.name: result}
    items = result.items() if isinstance(result, Mapping) else [(spec.name, result)]
    keep = (lambda t: t) if shared.differentiable else (lambda t: t.detach())
    reads_layer = bool(spec.needs & {"layer", "layer_grad"})
    size = shared.size
    per_image, table = (None, None) if shared.capture is None else (shared.capture.per_image, shared.capture.table)
    out = {}
    for key, value in items:
        part = value if isinstance(value, Result) else Result(value)
        low = keep(part.values)
        low = low if low.dtype == torch.float64 else low.float()
        at_input = tuple(low.shape[-2:]) == size
        resize = upsample_density if part.resize == "density" else upsample
        if per_image is not None:  # rows back to (B, K, ...)
            low = low.view(-1, per_image, *low.shape[1:])
        values = low if at_input else Upsampled(lambda low=low, resize=resize: resize(low, size),
                                                (*low.shape[:-2], *size))  # on first read of .values
        out[key] = AttentionMap(
            values=values, method=key, targets=table,
            layer=part.layer or (shared.layer[0] if reads_layer else None),
            lowres=None if at_input else low,
            meta={**spec.defaults, **options, **part.meta,
                  **({"layer_choice": layer_choice(shared.core, shared.images, shared.layer[0])}
                     if reads_layer and not part.layer else {})},
        )
    return out


def _checked(how: Explainer, model: object, images: object, targets: TargetSpec) -> torch.Tensor:
    """The images checked (and cast losslessly to the model's dtype); the model and targets checked against `how`."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images = _checked_images(images, model)
    core = unwrap(model)
    specs = how.specs
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
    return images


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
    if not all_finite(images):
        raise InputError("images contain NaN or infinite values")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), images.dtype)
    if images.dtype != dtype:
        if (images.dtype, dtype) not in LOSSLESS:
            raise InputError(f"images are {images.dtype} and the model is {dtype}: cast the images to the "
                             f"model's dtype (images.to({dtype})) or the model to theirs")
        images = images.to(dtype)
    return images


def _lock(model: nn.Module) -> threading.RLock:
    """One lock per model: concurrent calls on one model from several threads run one after the other."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())
