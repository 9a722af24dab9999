"""Calls of the public face a type checker must accept (`make typecheck`, tests/test_typecheck.py). Not run."""

from __future__ import annotations

import torch
from torch import nn

import attnscope as ats
from attnscope.explain import Layer


def calls(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    maps = ats.explain(model, x, "gradcam")
    more = ats.explain(model, x, ("gradcam", "ig"), targets=3, layer=Layer("features", layout="nchw"),
                       options={"ig": {"steps": 8}}, batch_size=4)
    how = ats.Explainer(("gradcam", "saliency"), layer="auto", options={"gradcam": {"relu": False}})
    again = how(model, x, targets=torch.tensor([1, 2]))
    narrower: ats.Explainer = how.replace(methods="gradcam")
    ats.Explainer("saliency", options=None, targets=lambda logits: logits[:, 0], output="logits", batch_size=8)
    found: ats.Explanation = narrower(model, x)
    return maps["gradcam"].values + more["ig"].values + again.logits + found["gradcam"].values
