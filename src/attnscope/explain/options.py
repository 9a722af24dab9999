"""Checks of method options shared by several methods (counts, baselines, windows)."""

from __future__ import annotations

import torch

from attnscope.errors import InputError


def positive_int(name: str, value: object, at_most: int | None = None) -> int:
    """`value` if it is an int ≥ 1 (and ≤ `at_most`), else InputError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if at_most is not None and value > at_most:
        raise InputError(f"{name}={value} is above the limit of {at_most}: each one is a pass through the model")
    return value


def pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints, as (h, w)."""
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"{name} must be an int or a pair (h, w) of ints, got {value!r}")
    return positive_int(name, value[0]), positive_int(name, value[1])


def baseline_like(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The baseline as (B, C, H, W): a number, a (C, H, W)-broadcastable tensor, or one per image."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        base = baseline.to(device=x.device, dtype=x.dtype)
        try:
            if base.dim() == 4 and base.shape[0] == x.shape[0]:
                return base.expand_as(x)
            if base.dim() <= 3:
                return base.expand(x.shape[1:]).expand_as(x)
        except RuntimeError:
            pass
        raise InputError(
            f"baseline of shape {tuple(base.shape)} does not fit images {tuple(x.shape)}: pass a number, "
            f"a tensor broadcastable to {tuple(x.shape[1:])}, or one baseline per image {tuple(x.shape)}"
        )
    raise InputError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")
