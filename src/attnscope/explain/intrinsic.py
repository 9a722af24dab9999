"""Intrinsic methods: the attention a model computes itself, read through the model's own protocol.

`models` never imports `explain`; a model with trainable attention answers
`forward(x, return_attention=True)` with `(logits, maps)`, maps one (B, h, w) tensor (or (B, 1, h, w)),
a list of them or a dict of them by layer. `own-attention` reads any such model; LTPA models also
declare `attention_kind = "ltpa"` (and `attention_normalisation`: "softmax" or "sigmoid"), which `ltpa` reads.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from attnscope.explain.method import Result, register_method
from attnscope.maps import upsample, upsample_density


def _returns_attention(model: nn.Module) -> str | None:
    if "return_attention" in inspect.signature(model.forward).parameters:
        return None
    return f"{type(model).__name__} has no forward(x, return_attention=True) giving its own attention"


@register_method("own-attention", "intrinsic", applies=_returns_attention, differentiable=True)
def own_attention_maps(own_attention: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, Result]:
    """The model's own attention: one map `own-attention/<name>` per map its forward(x, return_attention=True)
    returns, upsampled bilinearly as it is (units: the model's), and `own-attention`, their mean."""
    per_map = {f"own-attention/{name}": Result(a.float(), "bilinear", {"source": name}, name)
               for name, a in own_attention.items()}
    size = tuple(images.shape[-2:])
    mean = torch.stack([upsample(p.values, size) for p in per_map.values()]).mean(dim=0)
    return {"own-attention": Result(mean, meta={"sources": list(own_attention)}), **per_map}


def _is_ltpa(model: nn.Module) -> str | None:
    if getattr(model, "attention_kind", None) == "ltpa":
        return None
    return (
        f"{type(model).__name__} has no Learn-To-Pay-Attention estimators "
        "(ltpa reads models that declare attention_kind = 'ltpa', e.g. attnscope.models.get('ltpa'))"
    )


@register_method("ltpa", "intrinsic", applies=_is_ltpa, differentiable=True)
def ltpa(own_attention: dict[str, torch.Tensor], model: nn.Module, images: torch.Tensor) -> dict[str, Result]:
    """Learn To Pay Attention (Jetley et al., ICLR 2018): each estimator's a_i = softmax_i(c) or σ(c_i).

    One map per estimator, `ltpa/<layer>`, upsampled from its grid (kept as `lowres`), and `ltpa`,
    their mean. Softmax maps are spread over input pixels (divided by the pixels per grid cell) so
    that each sums to ~1 like its grid does and the mean is a mixture of the estimators' distributions;
    sigmoid maps are per-position gates in (0, 1), upsampled as they are. The maps do not depend on
    the class; `targets` records the predicted (or requested) class all the same.
    """
    softmax = getattr(model, "attention_normalisation", "softmax") == "softmax"
    meta = {
        "class_agnostic": True,
        "normalisation": "softmax" if softmax else "sigmoid",
        "units": "attention per input pixel (sums to ~1)" if softmax else "gate in (0, 1)",
    }
    resize = "density" if softmax else "bilinear"
    per_layer = {f"ltpa/{layer}": Result(a.float(), resize, {**meta, "estimator": layer}, layer)
                 for layer, a in own_attention.items()}  # (N, h, w) each
    size = tuple(images.shape[-2:])
    at_input = [upsample_density(p.values, size) if softmax else upsample(p.values, size) for p in per_layer.values()]
    mean = Result(torch.stack(at_input).mean(dim=0), resize, {**meta, "estimators": list(own_attention)})
    return {"ltpa": mean, **per_layer}
