"""Wrappers: any method's maps over variants of the call — noisy inputs, augmented inputs, other layers — combined.

A wrapped method is named `WRAPPER:METHOD` (`smoothgrad:saliency`, `vargrad:guided-backprop`,
`augsmooth:gradcam`, `fuse:layercam`). The wrapper makes variants of the call (each: the images
transformed, maybe another layer), explains every variant with *all* the methods wrapped alike in the
same call — so `smoothgrad:saliency` and `smoothgrad:gradcam` share each noisy pass — and combines the
variants' maps per method, after undoing each variant's transform. The targets are the call's,
resolved once on the clean images (noise never changes which class is explained). Options of a
wrapped method go to the wrapper if the wrapper has them (`n`, `sigma`, ...), else to the method.

| wrapper | variants | combined |
| --- | --- | --- |
| `smoothgrad` | x + ε_j, ε_j ~ N(0, σ²), σ = sigma · (max x − min x), n draws from `seed` | mean (Smilkov 2017) |
| `smoothgrad2` | same | mean of squares (SmoothGrad², Hooker et al. 2019) |
| `vargrad` | same | variance (Adebayo et al. 2018) |
| `augsmooth` | flips × brightness factors (pytorch-grad-cam's aug-smooth) | mean, each map flipped back |
| `fuse` | the chosen `layers` | LayerCAM's fusion: max (or mean) of tanh(γ M / max M) |
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attnscope.errors import InputError
from attnscope.explain.method import RERUNS, Method, _coerced
from attnscope.explain.options import positive_int
from attnscope.maps import AttentionMap
from attnscope.registry import METHODS, Registry

MAX_VARIANTS = 10_000


@dataclass(frozen=True)
class Variant:
    """One variant of the call: `images` → the images explained; `undo` maps its maps back; `layer` or None."""

    images: Callable[[torch.Tensor], torch.Tensor]
    undo: Callable[[torch.Tensor], torch.Tensor] = lambda m: m
    layer: Any = None


@dataclass(frozen=True)
class Wrapper:
    """`variants(images, **opts)` → [Variant]; `combine(maps (V, B, ...), **opts)` → maps (B, ...)."""

    name: str
    variants: Callable[..., list[Variant]]
    combine: Callable[..., torch.Tensor]
    options: dict[str, inspect.Parameter] = field(default_factory=dict)


WRAPPERS: Registry[Wrapper] = Registry("method wrapper")


def _options_of(*fns: Callable) -> dict[str, inspect.Parameter]:
    return {p.name: p for fn in fns for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def register_wrapper(name: str, variants: Callable[..., list[Variant]], combine: Callable[..., torch.Tensor]) -> None:
    """Register wrapper `name`; its options are the keyword-only parameters of `variants` and `combine`."""
    WRAPPERS.register(name, Wrapper(name, variants, combine, _options_of(variants, combine)))


# --- the wrappers --------------------------------------------------------------------------------------------


def noisy(images: torch.Tensor, *, n: int = 50, sigma: float = 0.15, seed: int = 0) -> list[Variant]:
    """n copies of the images with Gaussian noise of std sigma · (max − min) per image; the same draws for all."""
    positive_int("n", n, at_most=MAX_VARIANTS)
    if not sigma >= 0:
        raise InputError(f"sigma must be >= 0 (a fraction of each image's value range), got {sigma!r}")
    noise = torch.randn((n, *images.shape[1:]), generator=torch.Generator().manual_seed(seed)).to(images)
    scale = sigma * (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return [Variant(lambda x, j=j: x + scale * noise[j]) for j in range(n)]


def _mean(maps: torch.Tensor) -> torch.Tensor:
    return maps.mean(dim=0)


def _mean_square(maps: torch.Tensor) -> torch.Tensor:
    return maps.square().mean(dim=0)


def _variance(maps: torch.Tensor) -> torch.Tensor:
    return maps.var(dim=0, unbiased=False)


AUG_FLIPS = ("none", "horizontal")


def augmented(images: torch.Tensor, *, flips: Sequence[str] = AUG_FLIPS,
              factors: Sequence[float] = (0.9, 1.0, 1.1)) -> list[Variant]:
    """Every (flip, brightness factor) pair: x · f, flipped left–right for "horizontal" (the map is flipped back)."""
    for flip in flips:
        if flip not in AUG_FLIPS:
            raise InputError(f"augsmooth flips must be among {AUG_FLIPS}, got {flip!r}")
    out = []
    for flip in flips:
        for f in factors:
            mirror = (lambda t: t.flip(-1)) if flip == "horizontal" else (lambda t: t)
            out.append(Variant(lambda x, f=f, mirror=mirror: mirror(x * f), mirror))
    if not out:
        raise InputError("augsmooth needs at least one flip and one factor")
    return out


def layers(images: torch.Tensor, *, layers: Sequence[str] = ()) -> list[Variant]:
    """The same images explained at each of `layers` (dotted names)."""
    if not layers:
        raise InputError("fuse needs the option layers=[...] (dotted names of the layers to fuse)")
    return [Variant(lambda x: x, layer=name) for name in layers]


FUSIONS = ("max", "mean")


def fused(maps: torch.Tensor, *, how: str = "max", gamma: float = 2.0) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021, Eq. 6): each layer's map as tanh(γ M / max M) (γ = 0: M / max M),
    then the element-wise max (or mean) over layers. Maps (L, B, ..., H, W)."""
    if how not in FUSIONS:
        raise InputError(f"fuse how must be one of {FUSIONS}, got {how!r}")
    peak = maps.flatten(-2).amax(dim=-1)[..., None, None].clamp_min(1e-12)
    scaled = torch.tanh(gamma * maps / peak) if gamma > 0 else maps / peak
    return scaled.amax(dim=0) if how == "max" else scaled.mean(dim=0)


register_wrapper("smoothgrad", noisy, _mean)
register_wrapper("smoothgrad2", noisy, _mean_square)
register_wrapper("vargrad", noisy, _variance)
register_wrapper("augsmooth", augmented, _mean)
register_wrapper("fuse", layers, fused)


# --- wrapped methods in a call -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wrapped:
    """`WRAPPER:METHOD` as a method of one call."""

    name: str
    wrapper: Wrapper
    inner: Method

    kind = property(lambda self: self.inner.kind)
    uses_pass = True
    needs: frozenset = frozenset()  # the shared pass only resolves the targets for it
    differentiable = False

    def applies(self, model: torch.nn.Module) -> str | None:
        return self.inner.applies(model)

    @property
    def defaults(self) -> dict[str, Any]:
        return {**self.inner.defaults, **{k: p.default for k, p in self.wrapper.options.items()}}

    def checked_options(self, given: object) -> dict[str, Any]:
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise InputError(f"options for {self.name!r} must be a dict of option → value, got {type(given).__name__}")
        own = {k: v for k, v in given.items() if k in self.wrapper.options}
        hints = {**typing.get_type_hints(self.wrapper.variants), **typing.get_type_hints(self.wrapper.combine)}
        checked = {k: _coerced(f"{self.name}.{k}", v, hints.get(k, Any)) for k, v in own.items()}
        return {**checked, **self.inner.checked_options({k: v for k, v in given.items() if k not in own})}

    def split(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the wrapper's options, the inner method's options)."""
        own = {k: v for k, v in options.items() if k in self.wrapper.options}
        return own, {k: v for k, v in options.items() if k not in own}


def wrapped(name: str) -> Wrapped | None:
    """`WRAPPER:METHOD` as a `Wrapped`, None for a plain method name; unknown parts raise."""
    prefix, sep, inner = name.partition(":")
    if not sep:
        return None
    spec = METHODS.get(inner)
    if RERUNS & set(spec.inputs):
        raise InputError(f"{name!r}: {prefix} wraps methods that read the shared pass only; {inner!r} runs the model "
                         "again itself (use its own options, e.g. smoothgrad's n)")
    return Wrapped(name, WRAPPERS.get(prefix), spec)


def explain_wrapped(run: Callable[..., dict[str, AttentionMap]], items: Sequence[Wrapped],
                    options: Mapping[str, Mapping[str, Any]], images: torch.Tensor, targets: Any,
                    layer: Any) -> dict[str, AttentionMap]:
    """Maps of the wrapped methods: those with the same wrapper and wrapper options share every variant's pass.

    `run(images, methods, targets, layer, options)` is a plain explain call; `targets` the call's resolved ones.
    """
    groups: dict[tuple, list[tuple[Wrapped, dict[str, Any]]]] = {}
    for item in items:
        own, inner = item.split(options.get(item.name, {}))
        groups.setdefault((item.wrapper.name, repr(sorted(own.items()))), []).append((item, inner))
    out: dict[str, AttentionMap] = {}
    for members in groups.values():
        first = members[0][0]
        own, _ = first.split(options.get(first.name, {}))
        out.update(_explain_group(run, members, own, images, targets, layer))
    return out


def _explain_group(run, members, own, images, targets, layer) -> dict[str, AttentionMap]:
    wrapper = members[0][0].wrapper
    names = {item.inner.name: item for item, _ in members}
    variant_opts = {k: v for k, v in own.items() if k in _options_of(wrapper.variants)}
    combine_opts = {k: v for k, v in own.items() if k in _options_of(wrapper.combine)}
    inner_options = {item.inner.name: opts for item, opts in members if opts}
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for variant in wrapper.variants(images, **variant_opts):
        maps = run(variant.images(images), list(names), targets, variant.layer or layer, inner_options or None)
        for name in names:
            seen[name].append(variant.undo(maps[name].values))
    result = {}
    for name, item in names.items():
        values = wrapper.combine(torch.stack(seen[name]), **combine_opts)
        opts = {**item.defaults, **own, **inner_options.get(name, {})}
        result[item.name] = AttentionMap(values=values, method=item.name, targets=maps[name].targets,
                                         layer=None if wrapper.name == "fuse" else maps[name].layer, meta=opts)
    return result
