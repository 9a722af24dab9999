"""Maps that say nothing: NaN, infinite, all-zero or constant maps, found per image and explained.

A flagged map is still drawn (transparent where NaN, the colour bar's low end where constant), with
its flag written on it; the explain manifest, the terminal and the report carry the same words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Checked in this order; the first that holds names the image's flag.
FLAGS = ("nan", "inf", "all zero", "constant")
_WHY_ZERO = {
    "gradient": "the target's gradient is zero",
    "cam": "the target's gradient at the layer is zero, or the ReLU removed all of it",
    "perturbation": "perturbing the image does not change the target's score",
}
_WHY = {
    "nan": "the model or the target gave NaN (check the weights, the inputs and the target)",
    "inf": "the map overflowed (check the weights, the inputs and the target)",
    "constant": "the map does not vary over the image",
}


def flags(values: torch.Tensor) -> list[str | None]:
    """One flag per image of (B, H, W) maps (one of `FLAGS`), or None for a map that varies."""
    v = values.detach().cpu().flatten(1).numpy()  # numpy: many small reductions, no thread start-up
    nan, inf = np.isnan(v).any(1), np.isinf(v).any(1)
    low, high = v.min(1), v.max(1)
    checks = zip(nan, inf, (low == 0) & (high == 0), low == high, strict=True)
    return [next((f for f, hit in zip(FLAGS, c, strict=True) if hit), None) for c in checks]


def explain(flag: str, kind: str | None = None) -> str:
    """The flag and its likely cause, e.g. "all zero: the target's gradient is zero"."""
    if flag == "all zero":
        return f"all zero: {_WHY_ZERO.get(kind or '', 'the method gave no signal for this image')}"
    return f"{flag}: {_WHY[flag]}" if flag in _WHY else flag


def summary(per_image: Sequence[str | None], names: Sequence[str] | None = None) -> dict[str, list]:
    """`{flag: [image index or name, ...]}` of the flagged images (empty when none is)."""
    out: dict[str, list] = {}
    for i, flag in enumerate(per_image):
        if flag is not None:
            out.setdefault(flag, []).append(i if names is None else names[i])
    return out
