"""Small facts about any `nn.Module` that every layer needs: the device it lives on, the model inside a wrapper.

Like `errors`, this module sits below every layer of DESIGN.md and imports only torch.
"""

from __future__ import annotations

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


def as_nhwc(t: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor with NHWC strides, also where one channel makes NCHW and NHWC the same contiguous block
    (`.contiguous(memory_format=...)` then keeps the NCHW strides, and the convolution stays NCHW)."""
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t) if t.dim() == 4 else t


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
