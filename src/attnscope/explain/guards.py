"""What `explain` does about the caller's autograd mode and tensors that cannot carry gradients.

- Inside `torch.inference_mode()` no graph is recorded, so every gradient map would be zeros
  (`torch.enable_grad()` does not leave inference mode). `explain` leaves inference mode for its own
  pass (`torch.inference_mode(False)`) and the caller's mode is back when it returns: the maps are those
  of a call outside it. Under `torch.no_grad()` the engine enables gradients itself, as before.
- Images or a target tensor made under inference mode ("inference tensors") cannot take part in
  autograd: they are cloned (outside inference mode) before the pass; the caller's tensors are untouched.
- A model whose parameters or buffers are inference tensors (built or loaded under inference mode)
  cannot be differentiated through: refused with an `InputError` naming the fix.
- Sparse and meta image tensors hold no dense pixel values to explain: refused with an `InputError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from attnscope.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def outside_inference_mode(run: F) -> F:
    """Decorator of `run(how, model, images, targets)` (`explain.plan.explain_with`): run it as if called outside
    inference mode."""

    @functools.wraps(run)
    def guarded(how: Any, model: Any, images: Any, targets: Any) -> Any:
        images = dense_images(images)
        if isinstance(model, nn.Module):
            refuse_inference_model(model)
        if not (torch.is_inference_mode_enabled() or _is_inference(images) or _is_inference(targets)):
            return run(how, model, images, targets)
        with torch.inference_mode(False):
            return run(how, model, _cloned(images), _cloned(targets))

    return guarded  # type: ignore[return-value]


def dense_images(images: Any) -> Any:
    """`images` unchanged; a sparse or meta tensor raises an `InputError` saying what to pass instead."""
    if not isinstance(images, torch.Tensor):
        return images
    if images.is_sparse or images.layout != torch.strided:
        raise InputError(f"images are a {images.layout} tensor; pass dense pixels (images.to_dense())")
    if images.is_meta:
        raise InputError("images are on the meta device (shapes without values); pass real pixel values")
    return images


def refuse_inference_model(model: nn.Module) -> None:
    """Refuse a model whose weights are inference tensors: autograd cannot save them for the backward pass."""
    made = next((n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_inference()), None)
    if made is not None:
        raise InputError(f"the model's {made} is an inference tensor (the model was built or loaded under "
                         "torch.inference_mode()), so no gradient can flow through it; build or load the model "
                         "outside inference mode (torch.no_grad() is fine)")


def _is_inference(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_inference()


def _cloned(value: Any) -> Any:
    """An inference tensor cloned outside inference mode (a normal tensor, the same values); anything else as is."""
    return value.clone() if _is_inference(value) else value
