"""Transformer parts of the tiny image–text models (`clip-tiny`, `captioner-tiny`), readable by attnscope.

`Attention` is multi-head attention (Vaswani et al., NeurIPS 2017) for self- and cross-attention with an
optional mask. Like TinyViT's, it has two paths chosen by `fused_attn` (timm's name): the fused
`F.scaled_dot_product_attention`, and an explicit one whose softmax is the `nn.Softmax` child `softmax`,
so a hook sees the weights (B, heads, Tq, Tk). `VisionTower` is a ViT trunk without a head (conv stem,
optional CLS token); `TextTower` a causal token encoder (CLIP's text transformer); `Block` a pre-norm
block with an optional cross-attention after its self-attention (a transformer decoder layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError


class Attention(nn.Module):
    """softmax(q kᵀ / √d + mask) v over heads; `context` for cross-attention (keys and values from it)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = True

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                need_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, Tq, D), context (B, Tk, D) or None (self-attention), mask (Tq, Tk) or (B, 1, Tq, Tk) additive;
        `need_weights`: also the weights (B, heads, Tq, Tk) (the explicit path)."""
        context = x if context is None else context
        b, tq, d = x.shape
        tk, h = context.shape[1], self.heads
        q = self.q(x).view(b, tq, h, d // h).transpose(1, 2)  # (B, h, Tq, d/h)
        k, v = self.kv(context).view(b, tk, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 × (B, h, Tk, d/h)
        attn = None
        if self.fused_attn and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, Tq, d/h)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, Tq, Tk)
            attn = self.softmax(scores if mask is None else scores + mask)  # rows sum to 1
            out = attn @ v  # (B, h, Tq, d/h)
        out = self.proj(out.transpose(1, 2).reshape(b, tq, d))  # (B, Tq, D)
        return (out, attn) if need_weights else out


class Block(nn.Module):
    """Pre-norm block: x + attn(norm1(x)) [+ cross(norm_c(x), memory)], then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, cross: bool = False) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm_c = nn.LayerNorm(dim) if cross else None
        self.cross = Attention(dim, heads) if cross else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                need_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) → (B, T, D); `need_weights`: also the cross-attention's weights (B, heads, T, L)."""
        x = x + self.attn(self.norm1(x), mask=mask)  # (B, T, D)
        weights = None
        if self.cross is not None:  # every query reads the image tokens
            found = self.cross(self.norm_c(x), memory, need_weights=need_weights)
            x, weights = (x + found[0], found[1]) if need_weights else (x + found, None)
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if need_weights else x


def conv_stem(in_channels: int, dim: int, patch: int) -> nn.Sequential:
    """Images (B, C, H, W) → patch features (B, D, H/p, W/p): log2(p) 3×3 stride-2 conv + BN + ReLU, then a 1×1
    conv (Xiao et al., NeurIPS 2021, "Early convolutions help transformers see better")."""
    if patch < 2 or patch & (patch - 1):
        raise InputError(f"the conv stem needs a power-of-two patch_size >= 2, got {patch}")
    layers: list[nn.Module] = []
    c, steps = in_channels, patch.bit_length() - 1
    for i in range(steps):
        width = max(dim // 2 ** (steps - i), 8)
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(c, dim, 1))


def smallcnn_stem(widths: tuple[int, ...], dim: int, weights: str | None = None) -> nn.Sequential:
    """The hybrid ViT's stem (Dosovitskiy et al., ICLR 2021, §3.1): a CNN's feature map as the patches — SmallCNN's
    `features` (one stride-2 pool per block but the last), optionally from a SmallCNN checkpoint, then a 1×1 conv."""
    from attnscope.models.sat_encoder import _load_part
    from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig

    features = SmallCNN(SmallCNNConfig(widths=tuple(widths))).features
    if weights is not None:  # e.g. a SmallCNN classifier's checkpoint: its `features.*` tensors
        _load_part(features, weights, "features.", "smallcnn")
    return nn.Sequential(features, nn.Conv2d(widths[-1], dim, 1))


class VisionTower(nn.Module):
    """Images (B, C, S, S) → tokens (B, T, D): [CLS] + patches in raster order + positions → blocks → `norm`.

    `num_prefix_tokens` (timm's name) says how many tokens precede the patches (1 with a CLS token, else 0).
    `stem`: "conv" (`conv_stem`) or "smallcnn" (`smallcnn_stem`, with `stem_widths`, maybe `stem_weights`);
    `freeze_stem`: the stem's CNN keeps its weights and BatchNorm statistics (as a pretrained encoder is kept).
    """

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 cls: bool, in_channels: int = 3, stem: str = "conv", stem_widths: tuple[int, ...] = (16, 32, 64, 128),
                 stem_weights: str | None = None, freeze_stem: bool = False) -> None:
        super().__init__()
        if image_size % patch_size:
            raise InputError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.grid = image_size, image_size // patch_size
        self.num_prefix_tokens = int(cls)
        if stem == "conv":
            self.patch_embed = conv_stem(in_channels, dim, patch_size)
        elif stem == "smallcnn":
            stride = 2 ** (len(stem_widths) - 1)
            if stride != patch_size:
                raise InputError(f"a SmallCNN stem of {len(stem_widths)} blocks has stride {stride}, not "
                                 f"patch_size {patch_size}")
            self.patch_embed = smallcnn_stem(stem_widths, dim, stem_weights)
        else:
            raise InputError(f"stem must be 'conv' or 'smallcnn', got {stem!r}")
        self.frozen = freeze_stem
        if freeze_stem:
            self.patch_embed[0].requires_grad_(False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.grid**2, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def reset_parameters(self) -> None:
        """Re-draw this module's own parameters (CLS token, positions) as at initialisation (sanity checks)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def train(self, mode: bool = True) -> VisionTower:
        super().train(mode)
        if self.frozen:
            self.patch_embed[0].eval()  # a frozen CNN keeps its BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        """Images → tokens (B, T, D), after the final `norm` unless `final_norm=False`."""
        size = self.image_size
        if x.dim() != 4 or tuple(x.shape[-2:]) != (size, size):
            raise InputError(f"this vision tower was built for images (B, C, {size}, {size}), got {tuple(x.shape)}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, grid², D)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + grid², D)
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens) if final_norm else tokens  # (B, T, D)


def causal_mask(t: int, like: torch.Tensor) -> torch.Tensor:
    """(t, t) additive mask: 0 on and below the diagonal, −inf above (position i sees positions ≤ i)."""
    return torch.full((t, t), float("-inf"), dtype=like.dtype, device=like.device).triu(1)


class TextTower(nn.Module):
    """Token ids (K, L) → token states (K, L, D): embedding + positions → causal blocks (→ cross-attention to
    `memory` when built with `cross=True`) → `norm`. Position i sees positions ≤ i only."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 cross: bool = False) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, cross=cross) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def reset_parameters(self) -> None:
        """Re-draw this module's own parameters (positions) as at initialisation (sanity checks)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward_embedded(self, x: torch.Tensor, memory: torch.Tensor | None = None, need_weights: bool = False
                         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (K, L, D) (as `embed` gives them, positions not added) → token states (K, L, D);
        `need_weights`: also the last block's cross-attention weights (K, heads, L, L_memory)."""
        if x.shape[1] > self.max_len:
            raise InputError(f"{x.shape[1]} tokens are more than this text tower's max_len {self.max_len}")
        x = x + self.pos_embed[:, : x.shape[1]]
        mask = causal_mask(x.shape[1], x)
        for block in self.blocks[:-1]:
            x = block(x, memory, mask)
        out = self.blocks[-1](x, memory, mask, need_weights=need_weights)
        return (self.norm(out[0]), out[1]) if need_weights else self.norm(out)

    def forward(self, ids: torch.Tensor, memory: torch.Tensor | None = None, need_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_embedded(self.embed(ids), memory, need_weights)


def init_weights(module: nn.Module) -> None:
    """ViT-style initialisation: truncated-normal (σ 0.02) linear weights and positions, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
    for name, p in module.named_parameters():
        if name.endswith("pos_embed") or name.endswith("cls_token"):
            nn.init.trunc_normal_(p, std=0.02)
