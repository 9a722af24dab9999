"""Scorers: what a faithfulness metric asks the model about a perturbed image (see
`attnscope.metrics.faithfulness`). Each runs the model in eval mode without gradients, in chunks of
the forward-only memory budget (`explain.budget`: 64 MiB on a CPU, e.g. 35 inputs of the 64 px SmallCNN),
whatever number of inputs the metric builds at once (its `batch_size`): on a CPU a chunk of 256 such
inputs falls out of the caches (pixel flipping 1.6× slower than at 32, bench/README.md).

`channels_last="auto"` runs those forwards in NHWC layout (`explain.nhwc`, `explain.runner`) when the model declares
`prefers_channels_last` (SmallCNN: 1.6–1.9× faster perturbation metrics on a CPU, bench/README.md),
through `torch.func.functional_call` with channels-last views of the 4-D weights: the model itself is
neither copied nor changed. `True` forces it, `False` keeps the model's layout.
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.explain import budget, model_guard, nhwc, runner
from attnscope.metrics.faithfulness import Scorer
from attnscope.modules import as_nhwc as as_nhwc  # re-exported beside nhwc: the scorers' layout helpers
from attnscope.modules import device_of


def _scorer(model: nn.Module, targets: torch.Tensor, read, channels_last: bool | str) -> Scorer:
    device = device_of(model)
    classes = targets.to(device)
    forward = runner(model, nhwc(model, channels_last))

    def score(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        chunk = budget.chunk_size(budget.input_cost(model, tuple(x.shape[1:]), x.dtype), device, None, len(x),
                                  grad=False)
        with model_guard(model), torch.no_grad():
            logits = forward(x, chunk)
        return read(logits, classes[source.to(device)])

    return score


def class_probability(model: nn.Module, targets: torch.Tensor, channels_last: bool | str = "auto") -> Scorer:
    """`f(x, source) = softmax(model(x))[targets of the source image]` (RISE, Grad-CAM++, IROF)."""
    return _scorer(model, targets, lambda logits, c: logits.softmax(1).gather(1, c[:, None])[:, 0], channels_last)


def class_logit(model: nn.Module, targets: torch.Tensor, channels_last: bool | str = "auto") -> Scorer:
    """`f(x, source) = model(x)[targets of the source image]`, the logit (what captum and Quantus score)."""
    return _scorer(model, targets, lambda logits, c: logits.gather(1, c[:, None])[:, 0], channels_last)


def correct_class(model: nn.Module, targets: torch.Tensor, channels_last: bool | str = "auto") -> Scorer:
    """`f(x, source) = 1[argmax model(x) = class of the source image]`: ROAD's accuracy (Rong et al. 2022)."""
    return _scorer(model, targets, lambda logits, c: (logits.argmax(1) == c).double(), channels_last)


SCORERS = {"probability": class_probability, "logit": class_logit, "correct": correct_class}
