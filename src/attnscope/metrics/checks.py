"""The input checks every metric runs first: maps (B, H, W), images (B, C, H, W), ground truth; and the
one argument order of every metric, `metric(maps, ...)`, maps given as tensors or `AttentionMap`s.

One place, so that every metric refuses the same things with the same words: NaN or infinite
maps, maps of K targets per image (B, K, H, W: take one column first, `values[:, k]`), shapes that
do not match, empty masks.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from attnscope.errors import InputError
from attnscope.maps import AttentionMap
from attnscope.modules import all_finite

F = TypeVar("F", bound=Callable[..., Any])


def as_values(maps: Any) -> Any:
    """An `AttentionMap`'s `values` (a dict of them: each one's), anything else as it is."""
    if isinstance(maps, AttentionMap):
        return maps.values
    if isinstance(maps, Mapping) and any(isinstance(v, AttentionMap) for _, v in maps.items()):
        return {k: as_values(v) for k, v in maps.items()}
    return maps


def takes_maps(fn: F) -> F:
    """`fn(maps, ...)` also takes `AttentionMap`s (or a dict of them) for `maps`."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*_values_first(args), **_values_kw(kwargs))

    return call  # type: ignore[return-value]


def _values_first(args: tuple) -> tuple:
    return (as_values(args[0]), *args[1:]) if args else args


def _values_kw(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: as_values(v) if k == "maps" else v for k, v in kwargs.items()}


def _scorer(x: object) -> bool:
    return callable(x) and not isinstance(x, (torch.Tensor, AttentionMap, Mapping))


def scored(fn: F) -> F:
    """`fn(maps, images, f, ...)`, a metric that asks a scorer `f`, with `takes_maps`' maps; the order of
    releases before 0.2, `fn(f, images, maps, ...)`, still works with a DeprecationWarning."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) >= 3 and _scorer(args[0]) and not _scorer(args[2]):
            warnings.warn(f"{fn.__name__}(f, images, maps, ...) is deprecated: every metric takes the maps first, "
                          f"{fn.__name__}(maps, images, f, ...)", DeprecationWarning, stacklevel=2)
            args = (args[2], args[1], args[0], *args[3:])
        return fn(*_values_first(args), **_values_kw(kwargs))

    return call  # type: ignore[return-value]


def check_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """`maps` if it is a finite float tensor (B, H, W); else InputError."""
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"{name} must be a tensor (B, H, W), got {type(maps).__name__}")
    if maps.dim() == 4:
        raise InputError(f"{name} have shape {tuple(maps.shape)}: maps of several targets per image (B, K, H, W) "
                         "are not scored as one; pass one target's maps (B, H, W), e.g. values[:, k]")
    if maps.dim() != 3:
        raise InputError(f"{name} must be a tensor (B, H, W), got shape {tuple(maps.shape)}")
    if maps.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if not maps.is_floating_point():
        raise InputError(f"{name} must be a floating point tensor, got {maps.dtype}")
    if not all_finite(maps):
        raise InputError(f"{name} contain NaN or infinite values")
    return maps


def check_images(images: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
    """`images` if they are a finite float tensor (B, C, H, W) matching `maps` (B, H, W); else InputError."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a float tensor (B, C, H, W), got {shape}")
    if not all_finite(images):
        raise InputError("images contain NaN or infinite values")
    if maps is not None:
        check_maps(maps)
        want = (images.shape[0], *images.shape[-2:])
        if tuple(maps.shape) != want:
            raise InputError(f"maps must be (B, H, W) = {want} to match images {tuple(images.shape)}, "
                             f"got {tuple(maps.shape)}")
    return images


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Two batches of maps of the same shape (B, H, W)."""
    check_maps(a, "maps a")
    check_maps(b, "maps b")
    if a.shape != b.shape:
        raise InputError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_masks(masks: torch.Tensor, maps: torch.Tensor, full_ok: bool = True) -> torch.Tensor:
    """Bool masks (B, H, W) matching `maps`, none of them empty (nor full, unless `full_ok`)."""
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or tuple(masks.shape) != tuple(maps.shape):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        dtype = masks.dtype if isinstance(masks, torch.Tensor) else ""
        raise InputError(f"masks must be bool (B, H, W) = {tuple(maps.shape)}, got {dtype} {shape}")
    count = masks.flatten(1).sum(1)
    empty = (count == 0).nonzero().flatten().tolist()
    if empty:
        raise InputError(f"the ground truth of image(s) {empty[:10]} is empty: nothing to localise")
    if not full_ok:
        full = (count == masks[0].numel()).nonzero().flatten().tolist()
        if full:
            raise InputError(f"the ground truth of image(s) {full[:10]} covers every pixel: no background to "
                             "tell it from")
    return masks.to(maps.device)


def positive_int(name: str, value: object) -> int:
    """`value` if it is an int ≥ 1 (not a bool); else InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value
