"""Intrinsic methods: the attention a model computes itself, read through the model's own protocol.

`models` never imports `explain`; a model with trainable attention declares `attention_kind`
(and, for LTPA, `attention_normalisation`: "softmax" or "sigmoid") and answers
`forward(x, return_attention=True)` with `(logits, {layer name: a (B, h, w)})`.
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.explain.api import Context, register_method
from attnscope.maps import AttentionMap, upsample, upsample_density


def _is_ltpa(model: nn.Module) -> str | None:
    if getattr(model, "attention_kind", None) == "ltpa":
        return None
    return (
        f"{type(model).__name__} has no Learn-To-Pay-Attention estimators "
        "(ltpa reads models that declare attention_kind = 'ltpa', e.g. attnscope.models.get('ltpa'))"
    )


@register_method("ltpa", "intrinsic", needs={"own_attention"}, applies=_is_ltpa)
def ltpa(ctx: Context) -> dict[str, AttentionMap]:
    """Learn To Pay Attention (Jetley et al., ICLR 2018): each estimator's a_i = softmax_i(c) or σ(c_i).

    One map per estimator, `ltpa/<layer>`, upsampled from its grid (kept as `lowres`), and `ltpa`,
    their mean. Softmax maps are spread over input pixels (divided by the pixels per grid cell) so
    that each sums to ~1 like its grid does and the mean is a mixture of the estimators' distributions;
    sigmoid maps are per-position gates in (0, 1), upsampled as they are. The maps do not depend on
    the class; `targets` records the predicted (or requested) class all the same.
    """
    attention = ctx.capture.own_attention  # {layer: (B, h, w)}, from the shared pass
    classes = ctx.target.classes
    softmax = getattr(ctx.model, "attention_normalisation", "softmax") == "softmax"
    meta = {
        "class_agnostic": True,
        "normalisation": "softmax" if softmax else "sigmoid",
        "units": "attention per input pixel (sums to ~1)" if softmax else "gate in (0, 1)",
    }
    per_layer: dict[str, AttentionMap] = {}
    for layer, a in attention.items():
        a = a.detach().float()
        values = upsample_density(a, ctx.size) if softmax else upsample(a, ctx.size)  # (B, H, W)
        key = f"ltpa/{layer}"
        per_layer[key] = AttentionMap(values, key, classes, layer, a, {**meta, "estimator": layer})
    mean = torch.stack([m.values for m in per_layer.values()]).mean(dim=0)  # (B, H, W)
    return {"ltpa": AttentionMap(mean, "ltpa", classes, None, None, {**meta, "estimators": list(attention)}),
            **per_layer}
