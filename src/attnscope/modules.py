"""Small facts about any `nn.Module` that every layer needs: the device it lives on, the model inside a wrapper.

Like `errors`, this module sits below every layer of DESIGN.md and imports only torch.
"""

from __future__ import annotations

import re

import torch
from torch import nn


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else first buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel or DataParallel wrapper, or the model itself."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of `t` is finite, in one pass that allocates nothing per element: a float tensor's minimum
    and maximum are both finite exactly when all its values are (NaN propagates through both). 10 × less CPU than
    `isfinite(t).all()` on a batch of 16 images of 224 px (10.6 → 0.8 ms; 1 machine, not tested)."""
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return True
    if t.is_complex():
        return all_finite(torch.view_as_real(t))
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def as_nhwc(t: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor with NHWC strides, also where one channel makes NCHW and NHWC the same contiguous block
    (`.contiguous(memory_format=...)` then keeps the NCHW strides, and the convolution stays NCHW)."""
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t) if t.dim() == 4 else t


# The packages of torchvision's and timm's image classifiers (`torchvision.models.resnet`, `timm.models.convnext`,
# not torchvision's segmentation or detection subpackages): their forwards reshape with flatten/reshape, never
# with `view` across channels, so they take NHWC inputs as they take NCHW ones.
NHWC_SAFE = re.compile(r"(torchvision|timm)\.models\.[a-z0-9_]+")
NHWC_MIN_PIXELS = 4 * 224 * 224  # the batch from which the NHWC pass is faster (resnet18, 1 thread)


def nhwc_pass(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether explain's shared pass runs `x` in NHWC layout: a CPU batch of several channels into a convolutional
    image classifier of torchvision or timm, where oneDNN's NHWC convolutions give the same outputs to float rounding
    (Grad-CAM maps within 2e-6 of the NCHW pass) with 1.25-1.35 × less CPU (resnet18/50, bench/nhwc_pass.py).
    Models that declare `prefers_channels_last` (SmallCNN, LTPA) take NHWC in their reruns only (`Oracle`).
    Only from `NHWC_MIN_PIXELS` pixels in the batch: oneDNN reorders every NCHW weight on each call, which one
    224 px image does not amortise (Grad-CAM on resnet18: 1.26 × the NCHW pass's CPU at batch 1, 1.05 × at 2,
    1.02 × at 4, 0.74 × at 16; bench/nhwc_pass.py, 1 machine; 1 seed, not tested)."""
    if x.dim() != 4 or x.shape[1] < 2 or x.device.type != "cpu" or not x.is_floating_point():
        return False
    if x.shape[0] * x.shape[2] * x.shape[3] < NHWC_MIN_PIXELS:
        return False
    core = unwrap(model)
    return bool(NHWC_SAFE.fullmatch(type(core).__module__)) and \
        sum(isinstance(m, nn.Conv2d) for m in core.modules()) >= 2


def device_problem(spec: str) -> str | None:
    """Why `spec` is no device this machine can compute on (None: it is)."""
    if not re.fullmatch(r"[a-z_]+(:\d{1,4})?", spec):
        return f"{spec!r} is not a device (auto, cpu, cuda, cuda:1, mps ...)"
    try:
        device = torch.device(spec)
    except RuntimeError:
        return f"{spec!r} is not a device (auto, cpu, cuda, cuda:1, mps ...)"
    if device.type == "meta":
        return "meta holds shapes without values; compute on auto, cpu or cuda"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"{spec}: no CUDA GPU is usable on this machine; use auto or cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"{spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ..)"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"{spec}: MPS is not available on this machine; use auto or cpu"
    elif device.type != "cpu":
        return f"{spec}: attnscope computes on cpu, cuda or mps"
    return None


def class_names(model: nn.Module) -> tuple[str, ...] | None:
    """The names of a classifier's classes in index order, where the model carries them; None where not.

    Read from, in order: a `class_names` attribute (set by `models.get` for pretrained weights, by a
    checkpoint of a run trained on a named data set, or by `models.with_class_names`; `models.Normalized`
    passes its model's through), then a Hugging Face `config.id2label` whose labels are not the generic
    `LABEL_i`. A DistributedDataParallel or DataParallel wrapper is looked through.
    """
    model = unwrap(model)
    names = getattr(model, "class_names", None)
    if names is None:
        names = _id2label(getattr(model, "config", None))
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"model.class_names must be a sequence of str, got {type(names).__name__}")
    return tuple(names)


def _id2label(config: object) -> tuple[str, ...] | None:
    """A Hugging Face config's `id2label` as names in index order; None when absent, partial or generic."""
    mapping = getattr(config, "id2label", None)
    if not isinstance(mapping, dict) or not mapping:
        return None
    try:
        by_index = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(len(by_index))):
        return None
    names = tuple(by_index[i] for i in range(len(by_index)))
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names
