"""`explain()`: any registered method, on any batch, from shared passes; it returns an `Explanation`.

The ergonomic front door: `explain(model, images, methods, targets, ...)` is
`Explainer(methods, layer, options, ...)(model, images, targets)` (`explain.spec`), and the call itself
is planned and run by `explain.plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnscope.explain.layers import LayerSpec
from attnscope.explain.run import OutputSpec
from attnscope.explain.spec import Explainer, Options, differentiable_methods, method_spec
from attnscope.explain.targets import TargetSpec
from attnscope.maps import Explanation
from attnscope.registry import METHODS

__all__ = ["differentiable_methods", "explain", "list_methods", "method_spec"]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    methods: str | Sequence[str] = ("gradcam",),
    targets: TargetSpec = None,
    layer: LayerSpec = "auto",
    options: Options | None = None,
    batch_size: int | None = None,
    differentiable: bool = False,
    output: OutputSpec = None,
) -> Explanation:
    """Attention maps of `model` for `images` (B, C, H, W): an `Explanation`, one `AttentionMap` per method.

    `targets`: None (predicted class), int, LongTensor[B], LongTensor[B, K] (K targets per image:
    maps (B, K, H, W)), or callable(output) → scores (B,) or (B, K); for a model with class names
    (`ats.models.class_names(model)`), also a name ("Egyptian cat", every image), B names, or B lists of K names.
    `layer`: "auto", a dotted module name, a module or a `Layer` (for layer-based methods).
    `options`: per-method keyword options, e.g. `{"ig": {"steps": 64}}`.
    `batch_size`: explain in chunks of this many images (same maps, bounded memory).
    `differentiable`: keep the graph, so a loss on the maps (or on `.logits`) trains the model; the
    model keeps its training mode for the call (a training step's forward).
    `output`: what the targets score when the model does not return logits (`select_output`).
    A name `WRAPPER:METHOD` (`smoothgrad:saliency`, `augsmooth:gradcam`, `fuse:layercam`) explains
    variants of the call and combines them (`explain.wrappers`). Methods asked together share their
    forward and backward passes. The model is left exactly as found;
    concurrent calls on one model from several threads run one after the other.
    The same as `Explainer(methods, layer, options, None, batch_size, output, differentiable)(model, images,
    targets)`: consumers of maps (sanity checks, the leaderboard, the tracker) take such an `Explainer`.

        maps = explain(model, images, ("gradcam", "ig"), options={"ig": {"steps": 32}})
        maps["gradcam"].values        # (B, H, W), raw and signed, at the images' resolution
        maps.logits                   # the shared pass's logits
    """
    how = Explainer(methods, layer, options, None, batch_size, output, differentiable)  # type: ignore[arg-type]
    return how(model, images, targets)


def list_methods(kind: str | None = None) -> dict[str, str]:
    """Registered methods and their kind, optionally only those of `kind`."""
    return {n: METHODS.get(n).kind for n in METHODS if kind is None or METHODS.get(n).kind == kind}
