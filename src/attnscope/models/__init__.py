"""Models by name: `get(name, **cfg)`, `names()`, `register(name)` (`models.registry`), and the input
convention of a model's weights as a wrapper (`Normalized`, `normalized(model, "imagenet")`).

Every model built through `get` carries `attnscope_spec = {"name": ..., "config": {...}}`, which is
what a checkpoint records so that `checkpoint.load` can rebuild it. Models expose their own
attention through a small protocol (e.g. `forward(x, return_attention=True)`); this package never
imports `attnscope.explain` (nor `attnscope.data`).
"""

from __future__ import annotations

import importlib

from attnscope.models.registry import MODELS, check_fields, get, names, register

# Model modules register themselves on import. Each line is one family of models.
for _module in ("smallcnn", "torchvision_models", "vit", "swin", "ltpa", "pooling", "sat", "pretrained", "clip_tiny",
                "captioner_tiny"):
    importlib.import_module(f"attnscope.models.{_module}")

from attnscope.models.classes import class_names, with_class_names  # noqa: E402
from attnscope.models.normalized import Normalized, normalized  # noqa: E402
from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig  # noqa: E402
from attnscope.models.vit import TinyViT, TinyViTConfig  # noqa: E402

__all__ = ["MODELS", "Normalized", "SmallCNN", "SmallCNNConfig", "TinyViT", "TinyViTConfig", "check_fields",
           "class_names", "get", "names", "normalized", "register", "with_class_names"]
