"""Supervised attention for captioning (Liu, Mao, Sha & Yuille, AAAI 2017, "Attention Correctness in
Neural Image Captioning", strong supervision): each word that names a region pulls its α toward it.

For the word emitted at step t with a ground-truth box R_t, the target attention β_t on the h×w grid
of annotations is the share of R_t that each cell covers, β_ti = |cell_i ∩ R_t| / |R_t| (so Σ_i β_ti = 1),
and the penalty is the cross-entropy Σ_t −Σ_i β_ti log α_ti over the words that have a box; words
without one (function words) add nothing. `loss = NLL + λ · penalty` per caption, as the captioning
loss itself is summed over a caption's words. The cross-entropy is KL(β_t ‖ α_t) plus the entropy of
β_t, which does not depend on the model: it has the KL's gradient and is ≥ H(β) rather than ≥ 0.
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.guide.losses import GuideLoss, register_guide
from attnscope.modules import unwrap

NO_BOX = -1  # a word whose box row is all −1 names no region


def box_attention(boxes: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Target attention β (B, T, h·w) of word boxes (B, T, 4) (x0, y0, x1, y1 px of a `size` (H, W) image,
    x1, y1 exclusive; rows of −1: no box), and which words have a box (B, T) bool. β is 0 where there is none."""
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise InputError(f"word boxes must be (B, T, 4) (x0, y0, x1, y1; -1 for words without one), "
                         f"got {tuple(boxes.shape)}")
    (gh, gw), (height, width) = grid, size
    has = (boxes >= 0).all(dim=-1)  # (B, T)
    b = boxes.float()
    x0, y0, x1, y1 = b.unbind(-1)  # each (B, T)
    if bool(((x1 <= x0) | (y1 <= y0) | (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height))[has].any()):
        raise InputError(f"a word box is empty or leaves the {width}x{height} image")
    ox = _overlap(x0, x1, gw, width / gw)  # (B, T, w)
    oy = _overlap(y0, y1, gh, height / gh)  # (B, T, h)
    area = oy[..., :, None] * ox[..., None, :]  # (B, T, h, w): px² of the box in each cell
    beta = area.flatten(2) / area.flatten(2).sum(-1, keepdim=True).clamp_min(1e-12)
    return beta * has[..., None], has


def _overlap(lo: torch.Tensor, hi: torch.Tensor, cells: int, step: float) -> torch.Tensor:
    """Length of [lo, hi) inside each of `cells` cells of width `step`: (..., cells)."""
    starts = torch.arange(cells, dtype=lo.dtype, device=lo.device) * step
    return (torch.minimum(hi[..., None], starts + step) - torch.maximum(lo[..., None], starts)).clamp_min(0)


def attention_supervision(alphas: torch.Tensor, beta: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Σ_t −Σ_i β_ti log α_ti per caption (B,), over the steps where `has` (B, T) is set; α, β (B, T, L)."""
    if alphas.shape != beta.shape or has.shape != alphas.shape[:2]:
        raise InputError(f"alphas {tuple(alphas.shape)}, targets {tuple(beta.shape)} and word mask "
                         f"{tuple(has.shape)} must agree (B, T, L) / (B, T)")
    log_alpha = alphas.clamp_min(torch.finfo(alphas.dtype).tiny).log()
    ce = -(beta * log_alpha).sum(-1)  # (B, T)
    return (ce * has).sum(dim=1)


def _is_captioner(model: nn.Module) -> str | None:
    if getattr(model, "attention_kind", None) != "sat":
        return f"{type(model).__name__} is not a captioner with soft attention (attention_kind 'sat')"
    return None


@register_guide("sat", weight=1.0, applies=_is_captioner)
def caption_attention(model: nn.Module, images: torch.Tensor, captions: torch.Tensor, boxes: torch.Tensor
                      ) -> GuideLoss:
    """Mean over captions of Liu et al.'s supervised-attention penalty, and the teacher-forced word logits.

    `captions` (B, T+1) ids from <start> (the model's `forward` teacher-forces them); `boxes` (B, T, 4)
    the box of the object each target word `captions[:, 1:]` names, −1 for none. Returns
    `GuideLoss(penalty, logits (B, T, V))`; the caller adds λ · penalty to its NLL.
    """
    reason = _is_captioner(unwrap(model))
    if reason is not None:
        raise NotApplicableError(f"guide 'sat' does not apply: {reason}")
    if not isinstance(boxes, torch.Tensor) or boxes.shape[:2] != (captions.shape[0], captions.shape[1] - 1):
        raise InputError(f"boxes must be (B, T, 4) for captions (B, T+1) = {tuple(captions.shape)}, got "
                         f"{tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__}")
    out = model(images, captions)
    beta, has = box_attention(boxes.to(images.device), out.grid, tuple(images.shape[-2:]))
    return GuideLoss(attention_supervision(out.alphas, beta, has).mean(), out.logits)
