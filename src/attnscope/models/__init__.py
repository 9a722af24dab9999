"""Models by name: `get(name, **cfg)`, `names()`, `register(name)`.

Every model built through `get` carries `attnscope_spec = {"name": ..., "config": {...}}`, which is
what a checkpoint records so that `checkpoint.load` can rebuild it. Models expose their own
attention through a small protocol (e.g. `forward(x, return_attention=True)`); this package never
imports `attnscope.explain`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from torch import nn

from attnscope.errors import InputError
from attnscope.registry import MODELS

register = MODELS.register


def get(name: str, **cfg: Any) -> nn.Module:
    """Build model `name` with config `cfg`; unknown names and options raise with the known ones."""
    builder = MODELS.get(name)
    try:
        model = builder(**cfg)
    except TypeError as e:  # an option the builder does not take
        raise InputError(f"model {name!r}: {e}") from None
    config = getattr(model, "config", None)
    full = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(cfg)
    full.pop("weights", None)  # a local weights file is loaded once; checkpoints carry the tensors
    model.attnscope_spec = {"name": name, "config": _jsonable(full)}
    return model


def names() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if dataclasses.is_dataclass(v):
            v = dataclasses.asdict(v)
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


# Model modules register themselves on import. Each line is one family of models.
for _module in ("smallcnn", "torchvision_models", "vit", "ltpa", "sat", "pretrained"):
    importlib.import_module(f"attnscope.models.{_module}")

from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig  # noqa: E402
from attnscope.models.vit import TinyViT, TinyViTConfig  # noqa: E402

__all__ = ["MODELS", "SmallCNN", "SmallCNNConfig", "TinyViT", "TinyViTConfig", "get", "names", "register"]
