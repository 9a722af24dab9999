"""TinySwin: a small Swin Transformer (Liu et al., ICCV 2021) for 64 px images, on torchvision's implementation.

Patch embedding (TinyViT's conv stem of 3 × 3 stride-2 convs by default, which trains on small data where
one `patch_size`-strided conv does not; `stem="patch"` is torchvision's) → stages of Swin blocks attending
within `window` × `window` windows, every second block's windows cyclically shifted by half a window;
2 × 2 patch merging between stages → norm → global average pool → head. At the defaults a 64 px image
is a 16 × 16 token grid, then 8 × 8, then 4 × 4 (one window). It is torchvision's `SwinTransformer` itself,
so `explain` reads it as any torchvision Swin (`explain.adapters`); it has no CLS token: the head averages
every token.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.models.swin_transformer import SwinTransformer

from attnscope.models import check_fields, register
from attnscope.models.vit import TinyViTConfig, _stem


@dataclass(frozen=True)
class TinySwinConfig:
    num_classes: int = 10
    image_size: int = 64
    patch_size: int = 4
    dim: int = 32  # channels of the first stage, doubled by each patch merging
    depths: tuple[int, ...] = (2, 2, 2)
    heads: tuple[int, ...] = (2, 4, 8)
    window: int = 4
    mlp_ratio: float = 2.0
    stochastic_depth: float = 0.1
    stem: str = "conv"  # "patch": torchvision's one strided conv; "conv": TinyViT's conv stem (Xiao et al. 2021)

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_classes", "image_size", "patch_size", "dim", "depths", "heads", "window"),
                     probability=("stochastic_depth",))
        if len(self.depths) != len(self.heads):
            raise ValueError(f"depths {self.depths} and heads {self.heads} must have one entry per stage")
        grid, tile = self.image_size // self.patch_size, self.window * 2 ** (len(self.depths) - 1)
        if self.image_size % self.patch_size or grid % tile:
            raise ValueError(f"image_size {self.image_size} / patch_size {self.patch_size} = {grid} tokens per side "
                             f"must be a multiple of window × 2^(stages − 1) = {tile}")


class TinySwin(SwinTransformer):
    """torchvision's SwinTransformer built from a `TinySwinConfig` (input (B, 3, H, W) → logits)."""

    def __init__(self, config: TinySwinConfig) -> None:
        super().__init__([config.patch_size] * 2, config.dim, list(config.depths), list(config.heads),
                         [config.window] * 2, mlp_ratio=config.mlp_ratio,
                         stochastic_depth_prob=config.stochastic_depth, num_classes=config.num_classes)
        self.features[0][0] = _stem(TinyViTConfig(patch_size=config.patch_size, dim=config.dim, stem=config.stem))
        self.config = config


@register("swin")
def swin(**cfg) -> TinySwin:
    """TinySwin; options are the fields of `TinySwinConfig`."""
    for key in ("depths", "heads"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    return TinySwin(TinySwinConfig(**cfg))
