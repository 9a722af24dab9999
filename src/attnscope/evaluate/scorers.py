"""Scorers: what a faithfulness metric asks the model about a perturbed image (see
`attnscope.metrics.faithfulness`). Each runs the model in eval mode without gradients, in chunks."""

from __future__ import annotations

import torch
from torch import nn

from attnscope.explain.engine import model_guard, run_model
from attnscope.metrics.faithfulness import Scorer
from attnscope.modules import device_of


def _scorer(model: nn.Module, classes: torch.Tensor, read) -> Scorer:
    device = device_of(model)
    classes = classes.to(device)

    def score(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        with model_guard(model), torch.no_grad():
            logits = run_model(model, x.to(device))
        return read(logits, classes[source.to(device)])

    return score


def class_probability(model: nn.Module, classes: torch.Tensor) -> Scorer:
    """`f(x, source) = softmax(model(x))[class of the source image]` (RISE, Grad-CAM++, IROF)."""
    return _scorer(model, classes, lambda logits, c: logits.softmax(1).gather(1, c[:, None])[:, 0])


def class_logit(model: nn.Module, classes: torch.Tensor) -> Scorer:
    """`f(x, source) = model(x)[class of the source image]`, the logit (what captum and Quantus score)."""
    return _scorer(model, classes, lambda logits, c: logits.gather(1, c[:, None])[:, 0])


def correct_class(model: nn.Module, classes: torch.Tensor) -> Scorer:
    """`f(x, source) = 1[argmax model(x) = class of the source image]`: ROAD's accuracy (Rong et al. 2022)."""
    return _scorer(model, classes, lambda logits, c: (logits.argmax(1) == c).double())


SCORERS = {"probability": class_probability, "logit": class_logit, "correct": correct_class}
