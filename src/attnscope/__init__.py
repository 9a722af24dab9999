"""attnscope: the attention of image models — trainable, transformer and post-hoc maps,
whether they can be trusted, and how they come about during training.

Sub-packages are imported on first use (PEP 562), so `attnscope --help` answers without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = ("data", "errors", "explain", "metrics", "models", "sanity")
_NAMES = {"list_methods": "attnscope.explain", "AttentionMap": "attnscope.maps"}  # name → module defining it

if TYPE_CHECKING:
    from attnscope import data, errors, explain, metrics, models, sanity
    from attnscope.explain import list_methods
    from attnscope.maps import AttentionMap


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"attnscope.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'attnscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_NAMES])


__all__ = ["AttentionMap", "__version__", "data", "errors", "explain", "list_methods", "metrics", "models",
           "sanity"]
