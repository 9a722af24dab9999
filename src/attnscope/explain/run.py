"""Running a model for an explanation: the plumbing `sanity`, `evaluate` and `guide` use too.

`model_guard` leaves a model exactly as found (training flags, `requires_grad`, `.grad`), also when
something raises; `run_model` turns a model's `RuntimeError` into an `InputError` that quotes it;
`select_output` picks what targets score from any output (`ModelOutput.logits`, a dict's "logits", or
what `output=` says); `logits` runs the model without gradients in chunks; `runner` does so in NHWC layout
where `nhwc` says (a model's `prefers_channels_last`). These are public names of
`attnscope.explain`: code outside the package imports them from there, never from `explain.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.modules import as_nhwc


@contextmanager
def model_guard(model: nn.Module, differentiable: bool = False) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the block; then restore every flag, `requires_grad` and `.grad`.

    `differentiable=True` leaves the mode and the parameters as they are (a training step's forward)
    and restores them all the same.
    """
    training = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        if not differentiable:
            model.eval()
            for p, _, _ in params:
                p.requires_grad_(False)
        yield model
    finally:
        for module, flag in training:
            module.training = flag
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad



def run_model(model: nn.Module | Callable[[torch.Tensor], object], x: torch.Tensor) -> object:
    """`model(x)`; a `RuntimeError` raised inside becomes an `InputError` that quotes it (never retried)."""
    try:
        return model(x)
    except RuntimeError as e:
        if "has been modified by an inplace operation" in str(e):
            raise
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None) \
            if isinstance(model, nn.Module) else None
        if first is not None and x.dim() == 4 and first.in_channels != x.shape[1]:
            raise InputError(f"the model expects {first.in_channels} channels, got {x.shape[1]} in images of shape "
                             f"{tuple(x.shape)} (images are (B, C, H, W); permute (B, H, W, C) arrays "
                             "with x.permute(0, 3, 1, 2))") from e
        raise InputError(f"the model raised on inputs of shape {tuple(x.shape)}: {str(e).splitlines()[0]}") from e


OutputSpec = None | str | int | Callable[[object], object]


def select_output(raw: object, spec: OutputSpec = None) -> object:
    """The part of a model's output that targets score.

    None: a tensor as it is, else the `.logits` of a Hugging Face `ModelOutput`, else a dict's
    "logits" (or torchvision segmentation's "out"); anything else (a list of detections) as it is,
    for a callable target to score. A str picks that key or attribute, an int that item, a callable
    is applied to the output.
    """
    if callable(spec):
        return spec(raw)
    if isinstance(spec, str):
        found = raw.get(spec) if isinstance(raw, dict) else getattr(raw, spec, None)
        if found is None:
            raise InputError(f"output={spec!r}: the model's output ({type(raw).__name__}) has no such key or field")
        return found
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not isinstance(raw, (list, tuple)) or not -len(raw) <= spec < len(raw):
            raise InputError(f"output={spec}: the model's output ({type(raw).__name__}) has no item {spec}")
        return raw[spec]
    if spec is not None:
        raise InputError(f"output must be None, a key, an index or a callable, got {type(spec).__name__}")
    if isinstance(raw, torch.Tensor):
        return raw
    logits = getattr(raw, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(raw, dict):
        for key in ("logits", "out"):
            if isinstance(raw.get(key), torch.Tensor):
                return raw[key]
    return raw


def logits_of(output: object, batch: int) -> object:
    """The selected output checked to have one entry per image: a tensor (batch, ...) or a list of batch items."""
    if isinstance(output, torch.Tensor) and output.dim() >= 1 and output.shape[0] == batch:
        return output
    if isinstance(output, (list, tuple)) and len(output) == batch and not isinstance(output[0], torch.Tensor):
        return output
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    raise InputError(f"expected the model to return logits ({batch}, classes) or one entry per image, got {shape}; "
                     "pass output= to pick the part to explain")


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, chunk: int | None = None, output: OutputSpec = None) -> torch.Tensor:
    """The model's selected output (N, ...) for `x` without gradients, `chunk` images per forward (all by default)."""
    step = chunk or max(x.shape[0], 1)
    parts = [logits_of(select_output(run_model(model, x[i:i + step]), output), x[i:i + step].shape[0])
             for i in range(0, x.shape[0], step)]
    return torch.cat(parts)


def nhwc(model: nn.Module, setting: bool | str = "auto") -> bool:
    """Whether forwards without gradients (scorers, the tracker's causal passes) run in NHWC: "auto" where the
    model declares `prefers_channels_last`."""
    if setting == "auto":
        return bool(getattr(model, "prefers_channels_last", False))
    if not isinstance(setting, bool):
        raise InputError(f"channels_last must be true, false or 'auto', got {setting!r}")
    return setting


def runner(model: nn.Module, channels_last: bool) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """`run(x, chunk)`: the model's outputs for `x`, `chunk` inputs per forward; in NHWC, the weights' NHWC
    views are made once per call, not once per chunk."""
    from torch.func import functional_call

    def run(x: torch.Tensor, chunk: int) -> torch.Tensor:
        if channels_last:
            weights = {k: as_nhwc(v) for k, v in model.named_parameters()}
            forward = lambda inputs: functional_call(model, weights, (as_nhwc(inputs),))  # noqa: E731
        else:
            forward = model
        return torch.cat([run_model(forward, x[s : s + chunk]) for s in range(0, len(x), chunk)])

    return run
