"""Temporary rewrites of a model for one computation: one mechanism, one context manager.

A rewrite is registered by name with the modules it applies to and how to apply it to one module
(returning what the caller needs from that module and how to undo it). `rewritten(model, name)`
applies it to every matching module for a block and undoes everything in reverse order when the
block ends, also on error — as zennit's rules and canonizers do. A rewrite registered with
`applies=None` is applied once, to the model itself (zennit's composites, which place their own
rules and canonizers). Registered here: `guided-relu` (Springenberg et al.'s backward for
`nn.ReLU`); `explain.attention` registers `explicit-attention` (attention layers that form their
weights instead of a fused kernel); `explain.lrp` registers `lrp` (a zennit composite),
`explain.attnlrp` registers `attnlrp` (AttnLRP's rules) and `explain.reference` `deeplift-rescale`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnscope.registry import Registry

Undo = Callable[[], None]


@dataclass(frozen=True)
class Rewrite:
    """`applies(module)`: whether the rewrite touches `module` (None: the model as a whole, once);
    `apply(name, module, **kw)` → (result, undo)."""

    name: str
    applies: Callable[[nn.Module], bool] | None
    apply: Callable[..., tuple[Any, Undo]]


REWRITES: Registry[Rewrite] = Registry("model rewrite")


def register_rewrite(name: str, applies: Callable[[nn.Module], bool] | None):
    """Decorator registering `apply(name, module, **kw) -> (result, undo)` as rewrite `name`."""

    def add(apply: Callable[..., tuple[Any, Undo]]) -> Callable[..., tuple[Any, Undo]]:
        REWRITES.register(name, Rewrite(name, applies, apply))
        return apply

    return add


@contextmanager
def rewritten(model: nn.Module, name: str, **kw: Any) -> Iterator[list[tuple[str, Any]]]:
    """Apply rewrite `name` to every module of `model` it applies to; yield [(module name, result)]; undo after."""
    rewrite = REWRITES.get(name)
    undo: list[Undo] = []
    try:
        results = []
        touched = [("", model)] if rewrite.applies is None else \
            [(n, m) for n, m in model.named_modules() if rewrite.applies(m)]
        for module_name, module in touched:
            result, restore = rewrite.apply(module_name, module, **kw)
            undo.append(restore)
            results.append((module_name, result))
        yield results
    finally:
        for restore in reversed(undo):
            restore()


class Switch:
    """A flag read at backward time: whether ReLU gradients are guided."""

    on: bool = False


class _GuidedIdentity(torch.autograd.Function):
    """Identity forward; backward keeps only positive gradients while the switch is on."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: Switch) -> torch.Tensor:
        ctx.switch = switch
        return x.clone()  # a new tensor, so in-place ops downstream stay legal

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad.clamp_min(0) if ctx.switch.on else grad), None


@register_rewrite("guided-relu", applies=lambda m: isinstance(m, nn.ReLU))
def _guided_relu(_name: str, module: nn.Module, switch: Switch) -> tuple[None, Undo]:
    """Guided Backpropagation (Springenberg et al. 2015) for one `nn.ReLU` while `switch.on`.

    A forward hook passes the ReLU's output through `_GuidedIdentity`; with ReLU's own backward
    (zero where the input ≤ 0) this gives the guided rule R_in = 1[x > 0] · 1[R_out > 0] · R_out.
    Works with ReLU(inplace=True).
    """

    def hook(_module: nn.Module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            return _GuidedIdentity.apply(output, switch)
        return None

    hook.keeps_values = True  # forward values unchanged (sanity.reuse may replay the modules after it)
    return None, module.register_forward_hook(hook).remove
