"""`explain()`: any registered method, on any batch, from shared passes.

A method is a small function `fn(ctx, **options)` registered with its kind and what it reads
from the shared pass (`needs`). `Context` runs the shared forward (+ backward) once, for the union
of the needs of every method asked for, and memoises each method's result (`ctx.result(name)`)
so that a method built on another's map reuses it instead of recomputing it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import engine
from attnscope.explain.attention import explicit_attention
from attnscope.explain.layers import LayerSpec, resolve_layer
from attnscope.explain.targets import Target, TargetSpec
from attnscope.explain.tokens import TokenLayout, detect_layout
from attnscope.maps import AttentionMap, upsample
from attnscope.registry import METHODS

KINDS = ("cam", "gradient", "perturbation", "intrinsic", "transformer")
NEEDS = ("layer", "layer_grad", "input_grad", "guided_grad", "attention", "attention_grad", "own_attention")

MethodResult = torch.Tensor | AttentionMap | Mapping[str, torch.Tensor | AttentionMap]


@dataclass(frozen=True)
class Method:
    """A registered method: `fn(ctx, **options)` returns (B, h, w) or (B, H, W) maps.

    `needs` says what `fn` reads from the shared pass: "layer" (activations of the chosen layer),
    "layer_grad" (their gradients), "input_grad" (d score / d input), "guided_grad" (d score / d
    input with guided ReLUs), "attention" (every attention layer's weights, forced explicit for the
    pass), "attention_grad" (their gradients). Every method can read the logits, scores and target of the shared
    pass, which always runs (a plain no-grad forward when nothing is needed). `applies(model)` returns
    None when the method applies to `model`, else the reason it does not.
    """

    name: str
    kind: str
    fn: Callable[..., MethodResult]
    needs: frozenset[str] = frozenset()
    applies: Callable[[nn.Module], str | None] = lambda model: None
    defaults: dict[str, Any] = field(default_factory=dict)

    def run(self, ctx: Context) -> MethodResult:
        return self.fn(ctx, **ctx.options.get(self.name, {}))


def register_method(
    name: str,
    kind: str,
    needs: Iterable[str] = (),
    applies: Callable[[nn.Module], str | None] | None = None,
) -> Callable[[Callable[..., MethodResult]], Callable[..., MethodResult]]:
    """Decorator registering `fn(ctx, **options)` as method `name` of `kind`."""
    needs = frozenset(needs)
    if kind not in KINDS or not needs <= set(NEEDS):
        raise ValueError(f"bad kind {kind!r} or needs {sorted(needs)}")

    def add(fn: Callable[..., MethodResult]) -> Callable[..., MethodResult]:
        params = inspect.signature(fn).parameters.values()
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        METHODS.register(name, Method(name, kind, fn, needs, applies or (lambda model: None), defaults))
        return fn

    return add


class Context:
    """Everything one `explain` call shares between its methods."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: TargetSpec,
        layer: LayerSpec,
        needs: frozenset[str],
        options: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.model, self.images, self.options = model, images, options
        self.needs, self._target_spec, self._layer_spec = needs, targets, layer
        self._layer: tuple[str, nn.Module] | None = None
        self._capture: engine.Capture | None = None
        self._target: Target | None = None
        self._results: dict[str, MethodResult] = {}
        self.token_layout: TokenLayout | None = None  # set when the chosen layer outputs tokens (B, T, D)
        self._tokens: torch.Tensor | None = None  # that layer's raw output (B, T, D)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    @property
    def layer_name(self) -> str:
        return self.layer_and_module[0]

    @property
    def layer(self) -> nn.Module:
        return self.layer_and_module[1]

    @property
    def layer_and_module(self) -> tuple[str, nn.Module]:
        if self._layer is None:
            self._layer = resolve_layer(self.model, self._layer_spec, self.images)
        return self._layer

    @property
    def capture(self) -> engine.Capture:
        """The shared pass, run once for the union of the needs of the methods of this call.

        With "attention" needed, the attention layers run their explicit path for the pass. A
        chosen layer that outputs ViT tokens (B, T, D) is read as its patch grid (B, D, h, w).
        """
        if self._capture is None:
            uses_layer = bool(self.needs & {"layer", "layer_grad"})
            with ExitStack() as stack:
                layers = []
                if self.needs & {"attention", "attention_grad"}:
                    layers = stack.enter_context(explicit_attention(self.model))
                capture, self._target = engine.capture(
                    self.model,
                    self.images,
                    self._target_spec,
                    layer=self.layer if uses_layer else None,
                    layer_grad="layer_grad" in self.needs,
                    input_grad="input_grad" in self.needs,
                    guided_grad="guided_grad" in self.needs,
                    probes=[(layer.name, layer.probe) for layer in layers],
                    probe_grad="attention_grad" in self.needs,
                    own_attention="own_attention" in self.needs,
                )
            self._capture = self._tokens_as_grid(capture)
        return self._capture

    def _tokens_as_grid(self, capture: engine.Capture) -> engine.Capture:
        acts = capture.activations
        if acts is None or acts.dim() != 3:
            return capture
        self.token_layout = detect_layout(self.model, acts.shape[1], self.size)
        self._tokens = acts
        grads = capture.gradients
        return dataclasses.replace(
            capture,
            activations=self.token_layout.to_feature_map(acts),
            gradients=None if grads is None else self.token_layout.to_feature_map(grads),
        )

    @property
    def target(self) -> Target:
        """The resolved target, from the shared pass."""
        if self._target is None:
            _ = self.capture
        return self._target

    def input_gradients(self, x: torch.Tensor, target: Target, chunk: int | None = None) -> torch.Tensor:
        """d score / d x for inputs `x` (N, C, H, W) explained for `target` (N images)."""
        return engine.input_gradients(self.model, x, target, chunk)

    def scores(self, x: torch.Tensor, target: Target, chunk: int | None = None) -> torch.Tensor:
        """The explained score (N,) of inputs `x` for `target`, without gradients."""
        return engine.scores(self.model, x, target, chunk)

    def logits(self, x: torch.Tensor, chunk: int | None = None, channels_last: bool = False) -> torch.Tensor:
        """The logits (N, K) of inputs `x`, without gradients."""
        return engine.logits(self.model, x, chunk, channels_last)

    def logits_with_layer_output(self, image: int, output: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of image `image` of the batch when the chosen layer outputs `output` (N, ...).

        For a token layer `output` is patch features (N, D, h, w); the extra tokens keep their values.
        """
        if self.token_layout is not None:
            output = self.token_layout.to_tokens(output, self._tokens[image])
        return engine.logits_with_layer_output(self.model, self.layer, self.images[image : image + 1], output)

    def result(self, name: str) -> MethodResult:
        """The (memoised) result of method `name` on this batch; lets one method build on another."""
        if name not in self._results:
            self._results[name] = METHODS.get(name).run(self)
        return self._results[name]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    methods: str | Sequence[str] = ("gradcam",),
    targets: TargetSpec = None,
    layer: LayerSpec = "auto",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
) -> dict[str, AttentionMap]:
    """Attention maps of `model` for `images` (B, C, H, W), one `AttentionMap` per method.

    `targets`: None (predicted class), int, LongTensor[B] or callable(logits) → scores[B].
    `layer`: "auto", a dotted module name or a module (for layer-based methods).
    `options`: per-method keyword options, e.g. `{"ig": {"steps": 64}}`.
    `batch_size`: explain in chunks of this many images (same maps, bounded memory).
    Methods asked together share their forward and backward passes. The model is left exactly as found.
    """
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    specs = [METHODS.get(m) for m in methods]
    options = dict(options or {})
    _check_options(specs, options)
    _check_images(images)
    for spec in specs:
        reason = spec.applies(model)
        if reason is not None:
            usable = [m for m in METHODS if METHODS.get(m).applies(model) is None]
            raise NotApplicableError(
                f"method {spec.name!r} does not apply to this model: {reason}. "
                f"Methods that do: {', '.join(usable)}"
            )
    if isinstance(targets, torch.Tensor) and (targets.dim() != 1 or targets.shape[0] != images.shape[0]):
        raise InputError(
            f"target tensor has shape {tuple(targets.shape)} but the batch has {images.shape[0]} images"
        )
    if batch_size is not None and batch_size < images.shape[0]:
        chunks = [
            explain(model, images[i : i + batch_size], methods,
                    targets[i : i + batch_size] if isinstance(targets, torch.Tensor) else targets,
                    layer, options)
            for i in range(0, images.shape[0], batch_size)
        ]
        return {k: AttentionMap.cat([c[k] for c in chunks]) for k in chunks[0]}

    device = _device(model)
    needs = frozenset().union(*(s.needs for s in specs))
    with engine.model_guard(model):
        ctx = Context(model, images.to(device), targets, layer, needs, options)
        out: dict[str, AttentionMap] = {}
        for spec in specs:
            out.update(_as_maps(spec, ctx.result(spec.name), ctx))
    return out


def list_methods(kind: str | None = None) -> dict[str, str]:
    """Registered methods and their kind, optionally only those of `kind`."""
    return {n: METHODS.get(n).kind for n in METHODS if kind is None or METHODS.get(n).kind == kind}


def _as_maps(spec: Method, result: MethodResult, ctx: Context) -> dict[str, AttentionMap]:
    items = result.items() if isinstance(result, Mapping) else [(spec.name, result)]
    out = {}
    for key, value in items:
        if isinstance(value, AttentionMap):
            out[key] = value
            continue
        lowres = value if tuple(value.shape[-2:]) != ctx.size else None
        layer = ctx.layer_name if spec.needs & {"layer", "layer_grad"} else None
        out[key] = AttentionMap(
            values=(upsample(value, ctx.size) if lowres is not None else value).detach().float(),
            method=key,
            targets=ctx.target.classes,
            layer=layer,
            lowres=None if lowres is None else lowres.detach().float(),
            meta={**spec.defaults, **ctx.options.get(spec.name, {})},
        )
    return out


def _check_images(images: torch.Tensor) -> None:
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


def _check_options(specs: Sequence[Method], options: Mapping[str, Mapping[str, Any]]) -> None:
    asked = {s.name: s for s in specs}
    for name, opts in options.items():
        if name not in asked:
            raise InputError(
                f"options given for {name!r}, which is not among the methods asked for: {sorted(asked)}"
            )
        unknown = set(opts) - set(asked[name].defaults)
        if unknown:
            raise InputError(
                f"method {name!r} has no option {sorted(unknown)}; it takes {sorted(asked[name].defaults)}"
            )


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
