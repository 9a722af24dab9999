"""Methods are pure functions of named tensors; registering one derives what it reads from its signature.

    @register_method("gradcam", "cam")
    def gradcam(acts, grads, *, relu=True): ...

Parameters before `*` are *inputs*, named after what the shared pass provides (`INPUTS`); the
engine supplies them by name, one row per (image, target). Keyword-only parameters are *options*
with defaults; `explain(..., options={"gradcam": {"relu": False}})` sets them, checked against
their annotations. An unknown input name fails at registration, not at the first call.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.registry import METHODS

KINDS = ("cam", "gradient", "perturbation", "intrinsic", "transformer")

# Input name → (what it is, the shared-pass needs it implies).
INPUTS: dict[str, tuple[str, frozenset[str]]] = {
    "images": ("the explained images, one row per (image, target) (N, C, H, W)", frozenset()),
    "logits": ("the shared pass's output per row (N, classes)", frozenset()),
    "scores": ("the explained score per row (N,)", frozenset()),
    "classes": ("the explained class per row (N,), -1 for a callable target", frozenset()),
    "acts": ("the chosen layer's output as a feature map (N, C, h, w)", frozenset({"layer"})),
    "grads": ("d score / d acts (N, C, h, w)", frozenset({"layer", "layer_grad"})),
    "layer_name": ("the chosen layer's dotted name", frozenset({"layer"})),
    "class_weights": ("the linear head's weights of each row's class (N, C)", frozenset()),
    "class_bias": ("the linear head's bias of each row's class (N,)", frozenset()),
    "input_grad": ("d score / d input (N, C, H, W)", frozenset({"input_grad"})),
    "guided_grad": ("d score / d input with guided ReLUs (N, C, H, W)", frozenset({"guided_grad"})),
    "attentions": ("every attention layer's weights that ran, in run order: (N·nW, heads, Nq, Nk) each — (N, heads, "
                   "T, T) for a ViT, nW windows per row for windowed attention", frozenset({"attention"})),
    "attention_grads": ("d score / d each of `attentions`", frozenset({"attention", "attention_grad"})),
    "token_layout": ("the attention layers' token layout (CLS, registers, patch grid) of a ViT-like model",
                     frozenset({"attention"})),
    "token_graph": ("every attention layer placed on the image's token grid (windows, stages) and the tokens the "
                    "output reads: `explain.windowed.TokenGraph`", frozenset({"attention"})),
    "attention_maps": ("every attention layer's weights by module name, forward order: {name: (N, heads, Tq, Tk)}, "
                       "cross-attention included", frozenset({"attention"})),
    "attention_map_grads": ("d score / d each of `attention_maps`: {name: (N, heads, Tq, Tk)}",
                            frozenset({"attention", "attention_grad"})),
    "bias_grads": ("b ⊙ d score / d output of every Conv2d / BatchNorm2d with a bias, module order: (N, C, h, w) "
                   "each (FullGrad; the whole backward to the input)", frozenset({"bias_grad"})),
    "own_attention": ("the maps of forward(x, return_attention=True): {name: (N, h, w)}",
                      frozenset({"own_attention"})),
    "model": ("the model itself, for intrinsic methods that run its own protocol (captioning)", frozenset()),
    "oracle": ("reruns of the model (scores, input gradients, layer replacement): `explain.context.Oracle`",
               frozenset()),
    "own_pass": ("what the method's own forward kept where that forward was the call's shared pass "
                 "(`Method.own_pass`), else None", frozenset()),
}
RERUNS = frozenset({"oracle", "model"})  # inputs of methods that run the model again: not differentiable
PASS_FREE = frozenset({"images", "model"})  # the only inputs that do not need the shared pass


@dataclass(frozen=True)
class Result:
    """A method's map at any resolution (N, h, w), how it reaches the image, and what it adds to `meta`.

    `resize`: "bilinear" (CAMs: values interpolated) or "density" (attention distributions: spread
    over the pixels so that the map keeps its sum).
    """

    values: torch.Tensor
    resize: str = "bilinear"
    meta: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None


MethodResult = torch.Tensor | Result | Mapping[str, "torch.Tensor | Result"] | Any


@dataclass(frozen=True)
class Method:
    """A registered method: `fn(*inputs, **options)`; `inputs` and `options` come from its signature."""

    name: str
    kind: str
    fn: Callable[..., MethodResult]
    inputs: tuple[str, ...]
    options: dict[str, inspect.Parameter]
    applies: Callable[[nn.Module], str | None] = lambda model: None
    can_differentiate: bool | None = None  # None: derived from the inputs
    # own_pass(model, images, targets, output, options) -> OwnPass | None: where this method is a call's only one,
    # its own forward gives the call's logits, targets and attention, and no separate shared pass runs
    own_pass: Callable[..., Any] | None = None

    @property
    def needs(self) -> frozenset[str]:
        """What the shared pass must capture for this method."""
        return frozenset().union(*(INPUTS[name][1] for name in self.inputs))

    @property
    def uses_pass(self) -> bool:
        """Whether the method reads the shared pass (and so a target); `sat` generates its own sequence."""
        return not set(self.inputs) <= PASS_FREE

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.options.items()}

    @property
    def differentiable(self) -> bool:
        """Whether the map can keep its graph: by default, methods that run the model again cannot."""
        if self.can_differentiate is not None:
            return self.can_differentiate
        return not RERUNS & set(self.inputs)

    def run(self, inputs: Mapping[str, Any], options: Mapping[str, Any]) -> MethodResult:
        return self.fn(*(inputs[name] for name in self.inputs), **options)

    def checked_options(self, given: object) -> dict[str, Any]:
        """`given` options checked against their annotations (booleans also as true/false text)."""
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise InputError(f"options for {self.name!r} must be a dict of option → value, got {type(given).__name__}")
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise InputError(f"method {self.name!r} has no option {unknown}; it takes {sorted(self.options)}")
        hints = typing.get_type_hints(self.fn)
        return {k: _coerced(f"{self.name}.{k}", v, hints.get(k, Any)) for k, v in given.items()}


def register_method(name: str, kind: str, applies: Callable[[nn.Module], str | None] | None = None,
                    differentiable: bool | None = None, own_pass: Callable[..., Any] | None = None):
    """Decorator registering `fn(<inputs>, *, <options>)` as method `name` of `kind`.

    `applies(model)` returns None when the method applies to `model`, else the reason it does not.
    `differentiable` overrides the default (False for methods that read `oracle` or `model`). `own_pass`: see
    `Method.own_pass` (the method then reads its input `own_pass`).
    """
    if kind not in KINDS:
        raise ValueError(f"method {name!r}: kind must be one of {KINDS}, got {kind!r}")

    def add(fn: Callable[..., MethodResult]) -> Callable[..., MethodResult]:
        inputs, options = [], {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                if p.default is inspect.Parameter.empty:
                    raise ValueError(f"method {name!r}: option {p.name!r} needs a default")
                options[p.name] = p
            elif p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is inspect.Parameter.empty:
                if p.name not in INPUTS:
                    raise ValueError(f"method {name!r} reads {p.name!r}, which the engine does not provide; "
                                     f"inputs are: {', '.join(INPUTS)} (options go after `*`)")
                inputs.append(p.name)
            else:
                raise ValueError(f"method {name!r}: parameter {p.name!r} must be an input (before `*`, no default) "
                                 f"or a keyword-only option with a default")
        METHODS.register(name, Method(name, kind, fn, tuple(inputs), options, applies or (lambda model: None),
                                      differentiable, own_pass))
        return fn

    return add


def _coerced(name: str, value: Any, hint: Any) -> Any:
    """`value` if it fits type `hint` (bools also from 'true'/'false', floats from ints); else InputError."""
    ok, coerced = _fits(value, hint)
    if not ok:
        shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise InputError(f"option {name} must be {shown}, got {value!r}")
    return coerced


def _fits(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if hint is None or hint is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, coerced = _fits(value, arg)
            if ok:
                return True, coerced
        return False, value
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple or origin in (Sequence, list, typing.Sequence):
        if not isinstance(value, (tuple, list)) or isinstance(value, str):
            return False, value
        inner = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
            pairs = [_fits(v, a) for v, a in zip(value, args, strict=True)]
        else:
            pairs = [_fits(v, inner if inner is not None else Any) for v in value]
        return all(ok for ok, _ in pairs), type(value)(c for _, c in pairs)
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value
