"""SmallCNN: VGG-style conv blocks with BatchNorm, global average pooling and one linear layer.

GAP + linear makes CAM (Zhou et al. 2016) apply exactly: the class score is the mean over
positions of `fc.weight[c] · features[:, y, x]` plus the bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnscope.models.registry import check_fields, register


@dataclass(frozen=True)
class SmallCNNConfig:
    num_classes: int = 10
    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128)  # one block per width; all but the last halve H, W
    convs_per_block: int = 1
    dropout: float = 0.0
    batch_norm: bool = True

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_classes", "in_channels", "widths", "convs_per_block"),
                     probability=("dropout",))


class SmallCNN(nn.Module):
    """`features` (a Sequential of blocks) → global average pool → dropout → `fc`."""

    # Reruns of perturbation methods go NHWC for this model (channels_last="auto"): its NCHW max-pooling
    # is slower than its convolutions on a CPU, so masked passes run ~2 × faster (bench/README.md).
    prefers_channels_last = True

    def __init__(self, config: SmallCNNConfig = SmallCNNConfig()) -> None:
        super().__init__()
        self.config = config
        blocks, c_in = [], config.in_channels
        for i, width in enumerate(config.widths):
            layers: list[nn.Module] = []
            for _ in range(config.convs_per_block):
                norm = nn.BatchNorm2d(width) if config.batch_norm else nn.Identity()
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=not config.batch_norm), norm, nn.ReLU()]
                c_in = width
            if i < len(config.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(c_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)  # (B, C, h, w), h = H / 2**(len(widths) - 1)
        return self.fc(self.dropout(self.pool(a).flatten(1)))  # (B, num_classes)


@register("smallcnn")
def smallcnn(**cfg) -> SmallCNN:
    """SmallCNN; options are the fields of `SmallCNNConfig`."""
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    return SmallCNN(SmallCNNConfig(**cfg))
