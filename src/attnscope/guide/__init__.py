"""Attention guidance as functions: `loss, logits = ats.guide.cam(model, x, targets, allowed)`.

Each guide runs the model's forward pass once (through `explain(..., differentiable=True)`) and
returns a scalar penalty on attention outside the allowed region with the logits of that pass, so
the training loss is `F.cross_entropy(logits, y) + λ · loss` without a second forward.
"""

from __future__ import annotations

from attnscope.guide.captions import attention_supervision, box_attention, caption_attention
from attnscope.guide.losses import GUIDES, GuideLoss, GuideSpec, cam, mass_outside, own_attention, register_guide, rrr
from attnscope.guide.regions import outside

__all__ = ["GUIDES", "GuideLoss", "GuideSpec", "attention_supervision", "box_attention", "cam", "caption_attention",
           "mass_outside", "outside", "own_attention", "register_guide", "rrr"]
