"""The blocks a randomisation test re-initialises, in the order a forward pass runs them, and how.

A block is a module with parameters (or a normalisation layer's running statistics). Granularity:
"layer" (default, the paper's) takes every module that owns parameters directly — for SmallCNN
each conv, BatchNorm and linear layer; an int k takes the modules at name depth k (`features.0`
is depth 2), or shallower ones with nothing deeper to take; a list names the blocks. The order is
found by tracing one forward pass with hooks, never from registration order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError, UnknownNameError
from attnscope.explain.run import run_model
from attnscope.registry import Registry

Granularity = str | int | Sequence[str]
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
Init = Callable[[list[tuple[str, nn.Module]]], None]  # re-initialises (name, module) pairs in place
INITS: Registry[Init] = Registry("re-initialisation")


@dataclass(frozen=True)
class Block:
    """A block to randomise: its dotted name, the module, its position in execution order, and
    whether its submodules belong to it (`whole`; a "layer" block is only the module's own state)."""

    name: str
    module: nn.Module
    position: int
    whole: bool = True

    def parts(self) -> list[tuple[str, nn.Module]]:
        """(dotted name, module) of every module whose own parameters or statistics this block holds."""
        if not self.whole:
            return [(self.name, self.module)]
        return [(f"{self.name}.{n}" if n else self.name, m) for n, m in self.module.named_modules() if _owns_state(m)]


def trace_blocks(model: nn.Module, images: torch.Tensor, granularity: Granularity = "layer") -> list[Block]:
    """Blocks of `model` at `granularity`, in the order one forward pass on `images[:1]` first runs them.

    Candidates that do not run in the pass are left out (they cannot change the output).
    """
    candidates = _candidates(model, granularity)
    if not candidates:
        raise InputError(f"the model has no module with parameters at granularity {granularity!r}")
    started: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: object) -> None:
            if name not in started:
                started.append(name)

        return record

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in candidates.items()]
    try:
        with torch.no_grad():
            run_model(model, images[:1])  # the model's own refusal of the input is an InputError
    finally:
        for h in handles:
            h.remove()
    if not started:
        raise InputError("none of the model's blocks ran in a forward pass")
    whole = granularity != "layer"
    return [Block(name, candidates[name], i, whole) for i, name in enumerate(started)]


def _resettable(module: nn.Module) -> bool:
    return isinstance(module, NORMS) or any(True for _ in module.parameters())


def _owns_state(module: nn.Module) -> bool:
    return isinstance(module, NORMS) or any(True for _ in module.parameters(recurse=False))


def _candidates(model: nn.Module, granularity: Granularity) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if isinstance(granularity, str) and granularity == "layer":
        return {n: m for n, m in named.items() if n and _owns_state(m) and not _inside_norm(n, named)}
    if isinstance(granularity, int) and not isinstance(granularity, bool):
        if granularity < 1:
            raise InputError(f"block depth must be >= 1, got {granularity}")
        return dict(_at_depth(model, "", granularity))
    if isinstance(granularity, (list, tuple)) and all(isinstance(n, str) for n in granularity):
        for n in granularity:
            if n not in named or not n:
                raise UnknownNameError("block", n, [k for k in named if k])
        return {n: named[n] for n in granularity}
    raise InputError(f"blocks must be 'layer', a name depth (int) or a list of module names, got {granularity!r}")


def _inside_norm(name: str, named: dict[str, nn.Module]) -> bool:
    parts = name.split(".")
    return any(isinstance(named[".".join(parts[:i])], NORMS) for i in range(1, len(parts)))


def _at_depth(module: nn.Module, prefix: str, depth: int) -> Iterator[tuple[str, nn.Module]]:
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if not _resettable(child):
            continue
        deeper = [c for c in child.children() if _resettable(c)]
        if full.count(".") + 1 >= depth or not deeper or isinstance(child, NORMS):
            yield full, child
        else:
            yield from _at_depth(child, f"{full}.", depth)


def _reset_norm(module: nn.Module) -> None:
    """A normalisation layer back to identity: weight 1, bias 0, running mean 0, variance 1."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()  # BatchNorm: also resets the running statistics
    elif hasattr(module, "reset_running_stats"):
        module.reset_running_stats()


@INITS.register("default")
def default_init(parts: list[tuple[str, nn.Module]]) -> None:
    """Each module's own `reset_parameters()`: PyTorch's default initialisation (BatchNorm: identity + stats;
    `nn.MultiheadAttention`: its `_reset_parameters()`). A module with neither (a ViT's encoder holding its
    position embedding, a user's module with raw parameters) has its own parameters drawn from N(0, σ²), σ the
    standard deviation of each trained tensor (0.02, ViT's init, when that is 0 or undefined)."""
    for _name, m in parts:
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for p in m.parameters(recurse=False):
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                nn.init.normal_(p, std=std if math.isfinite(std) and std > 0 else 0.02)


@INITS.register("trunc-normal")
def trunc_normal_init(parts: list[tuple[str, nn.Module]], std: float = 0.01) -> None:
    """Every weight and bias from N(0, 0.01²) truncated at ±2σ (the paper's); normalisation layers to identity."""
    for _name, m in parts:
        if isinstance(m, NORMS):
            _reset_norm(m)
        else:
            for p in m.parameters(recurse=False):
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)


def reinitialise(block: Block, init: str | Init, seed: int) -> None:
    """Re-initialise `block` in place with `init` (a name in `INITS` or a function of the block's
    (name, module) parts), drawing from the global generator seeded with `seed` (as
    `torch.manual_seed(seed); module.reset_parameters()` would). The global random state is restored."""
    fn = INITS.get(init) if isinstance(init, str) else init
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():  # manual_seed seeds every device
        torch.manual_seed(seed)
        fn(block.parts())
