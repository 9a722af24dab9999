"""The hook engine: one forward and one backward pass capture what every method of a call reads.

`model_guard` leaves a model exactly as found (training flags, `requires_grad`, `.grad`, hooks),
also when something raises. `capture` registers its hooks, runs the passes and removes the hooks
in `finally`; what it returns is detached, so no graph outlives the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.targets import Target, TargetSpec, resolve


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block; restore every module's flag, `requires_grad` and `.grad`."""
    training = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in training:
            module.training = flag
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextmanager
def recording(module: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Record `module`'s output tensors into `store` while the block runs.

    The hook hands a clone downstream, so an in-place op after the layer (ReLU(inplace=True))
    cannot overwrite the recorded activations or the tensor their gradient is taken for.
    """

    def hook(_module: nn.Module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise InputError(f"the chosen layer returns {type(output).__name__}, not a tensor; choose another layer")
        store.append(output)
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class Capture:
    """What one shared pass saw. Everything is detached."""

    logits: torch.Tensor  # (B, K)
    scores: torch.Tensor  # (B,) the explained score of each image
    activations: torch.Tensor | None = None  # (B, C, h, w) output of the chosen layer
    gradients: torch.Tensor | None = None  # (B, C, h, w) d score / d activations
    input_grad: torch.Tensor | None = None  # (B, C, H, W) d score / d input


def run_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`model(x)` checked to give logits (B, K); a model that cannot run on `x` raises InputError."""
    try:
        logits = model(x)
    except RuntimeError as e:
        if "has been modified by an inplace operation" in str(e):
            raise
        raise InputError(f"the model cannot run on images of shape {tuple(x.shape)}: {e}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"expected the model to return logits (B, K), got {shape}")
    return logits


def capture(
    model: nn.Module,
    x: torch.Tensor,
    target: Target | TargetSpec,
    layer: nn.Module | None = None,
    layer_grad: bool = False,
    input_grad: bool = False,
) -> tuple[Capture, Target]:
    """One forward pass (recording `layer`) and, if any gradient is asked for, one backward pass.

    `target` may be unresolved (None, int, tensor, callable); it is resolved from this very
    forward pass, so asking for the predicted class costs no extra pass.
    """
    store: list[torch.Tensor] = []
    backward = layer_grad or input_grad
    x = x.detach().requires_grad_(backward)
    with torch.set_grad_enabled(backward), _maybe(layer is not None, layer, store):
        logits = run_model(model, x)
        if layer is not None and len(store) != 1:
            raise InputError(f"the chosen layer ran {len(store)} times in one forward pass; choose a layer that runs once")
        target = target if isinstance(target, Target) else resolve(target, logits)
        scores = target.score(logits)
        wrt = ([store[0]] if layer_grad else []) + ([x] if input_grad else [])
        grads = list(torch.autograd.grad(scores.sum(), wrt)) if wrt else []
    act = store[0].detach() if store else None
    return (
        Capture(
            logits=logits.detach(),
            scores=scores.detach(),
            activations=act,
            gradients=grads.pop(0) if layer_grad else None,
            input_grad=grads.pop(0) if input_grad else None,
        ),
        target,
    )


@contextmanager
def _maybe(active: bool, layer: nn.Module | None, store: list[torch.Tensor]) -> Iterator[None]:
    if active:
        with recording(layer, store):
            yield
    else:
        yield


def input_gradients(model: nn.Module, x: torch.Tensor, target: Target, chunk: int | None = None) -> torch.Tensor:
    """d score / d x for a batch (B, C, H, W), in chunks of `chunk` images (None: all at once)."""
    step = chunk or x.shape[0]
    parts = []
    for i in range(0, x.shape[0], step):
        cap, _ = capture(model, x[i : i + step], target.take(slice(i, i + step)), input_grad=True)
        parts.append(cap.input_grad)
    return torch.cat(parts)


@torch.no_grad()
def scores(model: nn.Module, x: torch.Tensor, target: Target, chunk: int | None = None) -> torch.Tensor:
    """The explained score (B,) of each image of `x`, without gradients, in chunks of `chunk`."""
    step = chunk or x.shape[0]
    return torch.cat(
        [target.take(slice(i, i + step)).score(run_model(model, x[i : i + step])) for i in range(0, x.shape[0], step)]
    )
