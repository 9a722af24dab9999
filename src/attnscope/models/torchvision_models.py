"""torchvision classifiers by name, never downloading: random weights or a local weights file."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from attnscope.errors import CheckpointError
from attnscope.models import register

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what torchvision's weights expect

TORCHVISION_NAMES = (
    "resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg16", "vgg16_bn", "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
    "vit_b_16",
)


def build_torchvision(name: str, num_classes: int = 1000, weights: str | None = None, **kwargs) -> nn.Module:
    """torchvision model `name` with random weights, or the state dict in the local file `weights`.

    `weights` may be a `.safetensors` file or a `.pth`/`.pt` state dict (loaded with
    `weights_only=True`). Nothing is fetched from the network.
    """
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        model.load_state_dict(read_state_dict(Path(weights)))
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file; a clear error when it is missing or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights-only unpickler refused it; its advice is not repeated
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointError(f"cannot read weights from {path}: not a file of tensors that torch loads "
                                  "without running code") from None
        raise CheckpointError(f"{path} holds pickled Python objects ({found.group(1)}) besides tensors, which "
                              "attnscope never loads (they can run code); save model.state_dict() instead, or "
                              "convert it to .safetensors") from None
    except Exception as e:  # corrupt or foreign file
        raise CheckpointError(f"cannot read weights from {path}: {_first_line(e)}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _first_line(error: Exception) -> str:
    """`Type: the first line of the message`; torch's messages run over many lines of advice."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


for _name in TORCHVISION_NAMES:
    register(_name, lambda _n=_name, **cfg: build_torchvision(_n, **cfg))
