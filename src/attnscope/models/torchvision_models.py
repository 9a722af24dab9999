"""torchvision classifiers by name, never downloading: random weights or a local weights file.

Twelve common names are registered; `build_torchvision` builds any classification model of
`torchvision.models.list_models` (the CLI's model sources reach the others through it).
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torch import nn

from attnscope.models.registry import register
from attnscope.models.weights import load_into, read_state_dict  # noqa: F401  (read_state_dict re-exported)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what torchvision's weights expect

TORCHVISION_NAMES = (
    "resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg16", "vgg16_bn", "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
    "vit_b_16",
)


def classification_names() -> list[str]:
    """Every torchvision classification model name (`torchvision.models.list_models`)."""
    return torchvision.models.list_models(module=torchvision.models)


def build_torchvision(name: str, num_classes: int = 1000, weights: str | None = None, **kwargs) -> nn.Module:
    """torchvision model `name` with random weights, or the state dict in the local file `weights`.

    `weights` may be a `.safetensors` file or a `.pth`/`.pt` state dict (loaded with
    `weights_only=True`). Nothing is fetched from the network.
    """
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        load_into(model, read_state_dict(weights), str(weights))
        model.attnscope_weights = {"path": str(weights), "file": Path(weights).name}
    return model


for _name in TORCHVISION_NAMES:
    register(_name, lambda _n=_name, **cfg: build_torchvision(_n, **cfg))
