"""What is explained: a class per image, or any scalar per image computed from the logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnscope.errors import InputError

TargetSpec = None | int | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Target:
    """A resolved target: `classes` (B,) long (-1 for a callable) and the score it explains."""

    classes: torch.Tensor  # (B,) long
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # logits (B, K) -> scores (B,)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """The explained scalar per image, shape (B,). For a class target: its logit."""
        if self.fn is not None:
            return _checked_scores(self.fn(logits), logits.shape[0])
        return logits.gather(1, self.classes.to(logits.device)[:, None])[:, 0]

    def take(self, index: torch.Tensor | slice) -> Target:
        """The target of some images of the batch (a callable applies to any batch)."""
        return Target(self.classes[index], self.fn)

    def repeat(self, times: int) -> Target:
        """The target of a batch repeated `times` times image-major ([x0, x0, ..., x1, x1, ...]).

        A callable target applies to the repeated batch as it is: it must score row by row.
        """
        return Target(self.classes.repeat_interleave(times), self.fn)


def resolve(spec: TargetSpec, logits: torch.Tensor) -> Target:
    """Turn the user's `targets` into a `Target`, given the logits (B, K) of the batch.

    None → predicted class; int → that class for every image; LongTensor[B] → one class per
    image; callable(logits) → scores[B]. A tensor whose length is not B raises (never truncated),
    and so does a class outside [0, K). A callable must score row by row (row i of the logits
    alone gives score i): methods that run many inputs per image call it on batches of any size.
    """
    b, k = logits.shape[0], logits.shape[-1]
    if spec is None:
        return Target(logits.argmax(dim=1).detach())
    if callable(spec) and not isinstance(spec, torch.Tensor):
        _checked_scores(spec(logits.detach()), b)  # fail early, before any pass
        return Target(torch.full((b,), -1, dtype=torch.long, device=logits.device), spec)
    if isinstance(spec, bool):
        raise InputError(f"targets must be None, an int, a LongTensor[B] or a callable, got {spec!r}")
    if isinstance(spec, int):
        classes = torch.full((b,), spec, dtype=torch.long, device=logits.device)
    elif isinstance(spec, torch.Tensor):
        if spec.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InputError(f"target tensor must hold integer classes, got dtype {spec.dtype}")
        if spec.dim() != 1 or spec.shape[0] != b:
            raise InputError(
                f"target tensor has shape {tuple(spec.shape)} but the batch has {b} images; "
                f"pass one class per image (LongTensor[{b}]), an int, None or a callable"
            )
        classes = spec.to(device=logits.device, dtype=torch.long)
    else:
        kind = type(spec).__name__
        raise InputError(f"targets must be None, an int, a LongTensor[B] or a callable, got {kind}")
    bad = (classes < 0) | (classes >= k)
    if bad.any():
        raise InputError(f"target class {int(classes[bad][0])} is out of range for a model with {k} classes")
    return Target(classes)


def _checked_scores(scores: torch.Tensor, b: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.shape != (b,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"a callable target must return scores of shape ({b},), got {shape}")
    return scores
