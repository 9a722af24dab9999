"""The encoder of Show, Attend and Tell (`models.sat`): a CNN whose last feature map's positions are the
annotation vectors a_i (L of them, D channels), with the input normalisation of its weights inside.

A SmallCNN trunk (optionally from a SmallCNN classifier's checkpoint) or a torchvision model cut after a
node (`encoder_layer`, optionally from local weights).
"""

from __future__ import annotations

import torch
from torch import nn

from attnscope.errors import CheckpointError, InputError
from attnscope.models.sat_config import SATConfig
from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig
from attnscope.models.torchvision_models import IMAGENET_MEAN, IMAGENET_STD


class Encoder(nn.Module):
    """Images (B, 3, H, W) → annotation vectors (B, L, D) and their grid (h, w)."""

    def __init__(self, config: SATConfig, weights: str | None = None) -> None:
        super().__init__()
        self.frozen = config.freeze_encoder
        if config.encoder == "smallcnn":
            self.body = SmallCNN(SmallCNNConfig(widths=tuple(config.encoder_widths))).features
            if weights is not None:  # e.g. a SmallCNN classifier's checkpoint: its `features.*` tensors
                _load_part(self.body, weights, "features.", "smallcnn")
            self.register_buffer("mean", torch.zeros(3, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(3, 1, 1), persistent=False)
        else:
            self.body = _torchvision_trunk(config.encoder, config.encoder_layer, weights)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)
        was = self.body.training
        self.body.eval()  # a trial pass for the channel count must leave BatchNorm statistics as they are
        with torch.no_grad():
            self.dim = int(self._features(torch.zeros(1, 3, 64, 64).to(self.mean)).shape[1])
        self.body.train(was)
        if self.frozen:
            self.body.requires_grad_(False)
        self.position, self.scale = config.position_channels, config.annotation_scale
        self.dim += 2 * self.position

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body((images - self.mean) / self.std)
        return out["a"] if isinstance(out, dict) else out  # (B, D, h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        fmap = self._features(images)  # (B, D, h, w)
        a = fmap.flatten(2).transpose(1, 2) * self.scale  # (B, L, D)
        h, w = fmap.shape[2], fmap.shape[3]
        if self.position:
            a = torch.cat([a, grid_positions(h, w, a).expand(a.shape[0], -1, -1)], dim=2)  # (B, L, D + 2)
        return a, (h, w)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self


def grid_positions(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(1, h·w, 2) cell centres (x, y) in [-1, 1], raster order (row-major, as the annotations)."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w * 2 - 1
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=1)[None]


def _torchvision_trunk(name: str, layer: str | None, weights: str | None) -> nn.Module:
    """torchvision model `name` cut after node `layer` (its output is the feature map).

    `weights` is a local state dict of the whole model; the tensors of the cut-off head are ignored.
    """
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    from attnscope.models.torchvision_models import build_torchvision

    model = build_torchvision(name)
    nodes = get_graph_node_names(model)[1]
    if not isinstance(layer, str) or not any(n == layer or n.startswith(layer + ".") for n in nodes):
        shown = ", ".join(n for n, _ in model.named_children())
        raise InputError(f"encoder_layer must name a module of {name} whose output is the feature map, got {layer!r}; "
                         f"its top-level modules are {shown}")
    trunk = create_feature_extractor(model, return_nodes={layer: "a"})
    if weights is not None:
        _load_part(trunk, weights, "", name)
    return trunk


def _load_part(module: nn.Module, weights: str, prefix: str, name: str) -> None:
    """Load `module` from the tensors `prefix + key` of a local weights file; other tensors are ignored."""
    from pathlib import Path

    from attnscope.models.torchvision_models import read_state_dict

    state = read_state_dict(Path(weights))
    missing = [prefix + k for k in module.state_dict() if prefix + k not in state]
    if missing:
        raise CheckpointError(f"{weights} lacks {len(missing)} tensors of the {name} encoder, e.g. {missing[0]}")
    try:
        module.load_state_dict({k: state[prefix + k] for k in module.state_dict()})
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit the {name} encoder: {str(e).splitlines()[-1].strip()}") from None
