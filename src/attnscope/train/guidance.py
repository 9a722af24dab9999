"""Attention guidance in `attnscope train`: a guide of `attnscope.guide`, its weight λ, and a region read off the batch.

The loss is CE + λ · penalty, the penalty one of `attnscope.guide`'s functions (found by name in
`GUIDES`) with the allowed region taken from each batch's ground truth: the digit's box or mask
(clutter and the decoy patch lie outside), or all but the decoy patch (region "not-decoy", as Ross
et al. annotate Decoy MNIST). Regions are found by name (`REGIONS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.guide import GUIDES, GuideLoss
from attnscope.guide.losses import check_applies
from attnscope.metrics import box_masks
from attnscope.registry import Registry
from attnscope.train.config import TrainConfig

REGIONS: Registry[Callable[[Any, tuple[int, int]], torch.Tensor]] = Registry("guidance region")


@REGIONS.register("box")
def _box(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    return box_masks(_field(batch, "box"), size)


@REGIONS.register("mask")
def _mask(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    return _field(batch, "mask").bool()


@REGIONS.register("not-decoy")
def _not_decoy(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    """Everything but the decoy patch: Ross et al.'s annotation A marks only the known shortcut."""
    boxes = _field(batch, "decoy_box")  # (B, 4), -1 where a sample has no decoy
    if (boxes < 0).any():
        raise InputError("guide region 'not-decoy' needs data with a decoy patch in every image (clutter-decoy)")
    return ~box_masks(boxes, size)


class Guidance:
    """The guide a `TrainConfig` asks for, bound to its weight and allowed region."""

    def __init__(self, name: str, weight: float | None, region: str) -> None:
        self.spec, self.region = GUIDES.get(name), REGIONS.get(region)
        self.weight = self.spec.weight if weight is None else float(weight)
        self._checked: set[int] = set()

    def check(self, batch: Any) -> None:
        """Raise now, before a run is written, if `batch` (e.g. one training sample) lacks the region."""
        self.region(batch, tuple(batch[0].shape[-2:]))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: Any) -> GuideLoss:
        """The penalty and logits (B, K) of one batch; `batch` supplies the allowed region."""
        if id(model) not in self._checked:
            check_applies(self.spec.name, model)
            self._checked.add(id(model))
        return self.spec.fn(model, x, y, self.region(batch, tuple(x.shape[-2:])))


def build(config: TrainConfig) -> Guidance | None:
    """The config's guidance, or None when it asks for none."""
    return Guidance(config.guide, config.guide_weight, config.guide_region) if config.guide else None


def _field(batch: Any, name: str) -> torch.Tensor:
    value = getattr(batch, name, None)
    if not isinstance(value, torch.Tensor):
        raise InputError(f"attention guidance needs data with a ground-truth {name!r} per image; "
                         f"this data set's samples have none")
    return value
