"""TinyViT: a small Vision Transformer (Dosovitskiy et al., ICLR 2021) whose attention can be read.

Patch embedding → [CLS, registers, patches] + learned positions → pre-norm blocks → norm → head on
the CLS token. Each block's attention has two paths, chosen by its `fused_attn` attribute (timm's
name for the same switch): the fused `F.scaled_dot_product_attention`, which never materialises
the weights, and an explicit path whose softmax is the `nn.Softmax` module `softmax`, so a forward
hook on it sees the weights (B, heads, T, T). Both paths compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError
from attnscope.models.registry import check_fields, register


@dataclass(frozen=True)
class TinyViTConfig:
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 64
    patch_size: int = 8  # 64 px / 8 → an 8×8 grid of 64 patch tokens
    dim: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    registers: int = 0  # extra learned tokens after CLS (Darcet et al., ICLR 2024)
    dropout: float = 0.0
    stem: str = "conv"  # "patch": one patch_size-strided conv; "conv": 3×3 stride-2 convs (Xiao et al. 2021)

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_classes", "in_channels", "image_size", "patch_size", "dim", "depth",
                                     "heads"), probability=("dropout",))


class Attention(nn.Module):
    """Multi-head self-attention; `fused_attn` picks the fused kernel or the explicit softmax path."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 × (B, h, T, d/h)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d/h)
        else:
            attn = self.softmax((q * self.scale) @ k.transpose(-2, -1))  # (B, h, T, T), rows sum to 1
            out = attn @ v  # (B, h, T, d/h)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))  # (B, T, D)
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, T, D)


class TinyViT(nn.Module):
    """`patch_embed` → tokens → `blocks` → `norm` → `head` on the CLS token.

    Token layout (T = 1 + registers + grid²): index 0 is CLS, then the registers, then the patches
    in raster order. `num_prefix_tokens` says how many tokens precede the patches (timm's name).
    `cam_layer` is the input of the last attention: the last block's patch outputs never reach the
    CLS head, so Grad-CAM on them would be zero.
    """

    def __init__(self, config: TinyViTConfig = TinyViTConfig()) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise InputError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
        self.config = config
        self.grid = config.image_size // config.patch_size
        self.num_prefix_tokens = 1 + config.registers
        tokens = self.num_prefix_tokens + self.grid**2
        self.patch_embed = _stem(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.reg_tokens = nn.Parameter(torch.zeros(1, config.registers, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, config.dim))
        self.blocks = nn.Sequential(
            *[Block(config.dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)]
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        self.cam_layer = f"blocks.{config.depth - 1}.norm1"
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.reg_tokens, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[-2:]) != (size, size):
            raise InputError(f"TinyViT was built for images (B, C, {size}, {size}), got {tuple(x.shape)}")
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, grid², D), raster order
        prefix = torch.cat([self.cls_token, self.reg_tokens], dim=1).expand(b, -1, -1)  # (B, 1 + R, D)
        tokens = torch.cat([prefix, patches], dim=1) + self.pos_embed  # (B, T, D)
        tokens = self.norm(self.blocks(tokens))  # (B, T, D)
        return self.head(tokens[:, 0])  # (B, num_classes)


def _stem(config: TinyViTConfig) -> nn.Module:
    """Images (B, C, H, W) → patch features (B, D, H/p, W/p).

    "conv" is the convolutional stem of Xiao et al. (NeurIPS 2021): log2(p) 3×3 stride-2 conv + BN +
    ReLU layers, then a 1×1 conv; it trains far more easily than the one-conv "patch" stem on small data.
    """
    p, c, d = config.patch_size, config.in_channels, config.dim
    if config.stem == "patch":
        return nn.Conv2d(c, d, p, stride=p)
    if config.stem != "conv":
        raise InputError(f"stem must be 'patch' or 'conv', got {config.stem!r}")
    if p & (p - 1):
        raise InputError(f"the conv stem needs a power-of-two patch_size, got {p}")
    layers: list[nn.Module] = []
    for i in range(p.bit_length() - 1):
        width = d // 2 ** (p.bit_length() - 2 - i) // 2  # widths grow to d/2 before the 1×1 conv
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(c, d, 1))


@register("vit")
def vit(**cfg) -> TinyViT:
    """TinyViT; options are the fields of `TinyViTConfig`."""
    return TinyViT(TinyViTConfig(**cfg))
