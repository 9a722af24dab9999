"""Where attention is allowed: a box, a mask or a callable → the (B, H, W) weight of what lies outside.

`allowed` is one of
    boxes     an integer tensor (B, 4) of (x0, y0, x1, y1), x1 and y1 exclusive — or (4,), one box for every image;
    a mask    a bool or float tensor (B, H, W) — or (H, W), one mask for every image; a float mask is a
              weight in [0, 1] (1 allowed, 0 forbidden);
    callable  `allowed(x, targets)` returning either of the above for the batch.
Everything else, and boxes or masks that do not fit the images, raise `InputError`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnscope.errors import InputError
from attnscope.metrics import box_masks

Allowed = torch.Tensor | Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def outside(allowed: Allowed, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """The float weight (B, H, W) of forbidden pixels, 1 − allowed, on the device of `x` (B, C, H, W)."""
    if callable(allowed) and not isinstance(allowed, torch.Tensor):
        allowed = allowed(x, targets)
    if not isinstance(allowed, torch.Tensor):
        raise InputError(f"allowed must be boxes (B, 4), a mask (B, H, W) or a callable(x, y) returning one, "
                         f"got {type(allowed).__name__}")
    b, (h, w) = x.shape[0], x.shape[-2:]
    allowed = allowed.to(x.device)
    if allowed.dtype in (torch.bool, *_FLOATS):
        mask = _mask(allowed, b, h, w)
        return (~mask).float() if mask.dtype == torch.bool else 1.0 - mask.to(x.dtype)
    return (~box_masks(_boxes(allowed, b, h, w), (h, w))).float()


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _mask(mask: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    if mask.shape == (h, w):
        mask = mask.expand(b, h, w)
    if mask.shape != (b, h, w):
        raise InputError(f"an allowed mask must be (B, H, W) = ({b}, {h}, {w}) or (H, W), got {tuple(mask.shape)} "
                         f"of {mask.dtype} (boxes are an integer tensor)")
    if mask.dtype != torch.bool and not ((mask >= 0) & (mask <= 1)).all():
        raise InputError("a float allowed mask is a weight in [0, 1] (1 allowed, 0 forbidden)")
    return mask


def _boxes(boxes: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    if boxes.shape == (4,):
        boxes = boxes.expand(b, 4)
    if boxes.shape != (b, 4):
        raise InputError(f"allowed boxes must be an integer tensor (B, 4) = ({b}, 4) or (4,), "
                         f"got {tuple(boxes.shape)} of {boxes.dtype}")
    x0, y0, x1, y1 = boxes.unbind(1)
    bad = ~((0 <= x0) & (x0 < x1) & (x1 <= w) & (0 <= y0) & (y0 < y1) & (y1 <= h))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise InputError(f"allowed box {boxes[i].tolist()} of image {i} is empty or leaves the {w}x{h} image "
                         "(boxes are x0, y0, x1, y1 with 0 <= x0 < x1 <= W, 0 <= y0 < y1 <= H)")
    return boxes
