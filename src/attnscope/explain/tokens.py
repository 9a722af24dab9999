"""Token layout of a vision transformer: which tokens are CLS/registers and which form the patch grid.

A ViT's token sequence (T tokens) is `prefix` extra tokens (CLS, registers) followed by an h × w
grid of patches in raster order. The layout is read from what the model declares — timm's and
TinyViT's `num_prefix_tokens`, a `cls_token` / `class_token` parameter (torchvision), the tokens a
Hugging Face model's embeddings prepend (CLS, distillation, registers) — and the
grid from the image's aspect ratio; a model that declares nothing may have 0 extra tokens or 1
(taken as CLS). Anything else raises instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError


@dataclass(frozen=True)
class TokenLayout:
    """`prefix` extra tokens, then a `grid` (h, w) of patch tokens; `cls` is the CLS index or None."""

    prefix: int
    grid: tuple[int, int]
    cls: int | None

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def to_grid(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-token scores (B, T) → patch scores (B, h, w)."""
        self._check(scores.shape[1])
        return scores[:, self.prefix :].reshape(scores.shape[0], *self.grid)

    def to_feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token features (B, T, D) → patch features (B, D, h, w), as a CNN layer's output."""
        self._check(tokens.shape[1])
        patches = tokens[:, self.prefix :]  # (B, h·w, D)
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def to_tokens(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Patch features (N, D, h, w) back to tokens (N, T, D), the extra tokens taken from `tokens` (T, D)."""
        self._check(tokens.shape[0])
        n = features.shape[0]
        patches = features.flatten(2).transpose(1, 2)  # (N, h·w, D)
        return torch.cat([tokens[None, : self.prefix].expand(n, -1, -1), patches], dim=1)

    def _check(self, t: int) -> None:
        if t != self.tokens:
            raise InputError(f"{t} tokens do not fit the layout ({self.prefix} extra + {self.grid} grid)")


def declared_prefix(model: nn.Module) -> tuple[int | None, bool]:
    """(number of tokens before the patches, whether one is CLS) as the model declares them; None if it does not."""
    has_cls = _has_cls(model)
    declared = getattr(model, "num_prefix_tokens", None)
    if isinstance(declared, int):
        return declared, has_cls
    embedded = _embedding_tokens(model)
    if embedded is not None:
        return embedded, True
    if has_cls:
        return 1, True
    return None, False


def detect_layout(model: nn.Module, tokens: int, size: tuple[int, int]) -> TokenLayout:
    """The layout of `tokens` tokens of `model` on images of `size` (H, W); InputError if none fits."""
    prefix, has_cls = declared_prefix(model)
    candidates = [(prefix, has_cls)] if prefix is not None else [(0, False), (1, True)]
    for extra, cls in candidates:
        grid = _grid(tokens - extra, size)
        if grid is not None:
            return TokenLayout(extra, grid, 0 if cls else None)
    known = f"{prefix} extra tokens" if prefix is not None else "0 or 1 extra tokens (the model declares none)"
    raise InputError(
        f"{tokens} tokens are not a patch grid of a {size[0]}×{size[1]} image plus {known}; "
        f"a model with other extra tokens should declare `num_prefix_tokens`"
    )


def _embedding_tokens(model: nn.Module) -> int | None:
    """Extra tokens a Hugging Face ViT's embeddings prepend (CLS, DeiT's distillation token, Dinov2's registers)."""
    for module in model.modules():
        if module is model or not type(module).__module__.startswith("transformers."):
            continue
        if isinstance(getattr(module, "cls_token", None), torch.Tensor):
            registers = getattr(module, "register_tokens", None)
            return (1 + isinstance(getattr(module, "distillation_token", None), torch.Tensor)
                    + (registers.shape[1] if isinstance(registers, torch.Tensor) else 0))
    return None


def _has_cls(model: nn.Module) -> bool:
    for name in ("cls_token", "class_token"):
        if isinstance(getattr(model, name, None), torch.Tensor):
            return True
    return False


def _grid(patches: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) with h · w = patches and h : w = H : W, or None."""
    if patches < 1:
        return None
    height, width = size
    if patches * height % width:  # h² = patches · H / W must be a whole square
        return None
    h = math.isqrt(patches * height // width)
    if h > 0 and patches % h == 0 and h * width == (patches // h) * height:
        return h, patches // h
    return None
