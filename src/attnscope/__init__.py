"""attnscope: the attention of image models — trainable, transformer and post-hoc maps,
whether they can be trusted, and how they come about during training.

Submodules and the main names are imported on first use (`ats.explain`, `ats.track`, ...), so
that `import attnscope` — and `attnscope --help` — do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("data", "errors", "explain", "guide", "integrations", "metrics", "models", "report", "sanity", "stats",
               "track", "train")
_NAMES = {
    "AttentionMap": ("attnscope.maps", "AttentionMap"),
    "SequenceMap": ("attnscope.maps", "SequenceMap"),
    "Explanation": ("attnscope.maps", "Explanation"),
    "Explainer": ("attnscope.explain.spec", "Explainer"),
    "list_methods": ("attnscope.explain", "list_methods"),
    "show": ("attnscope.report.show", "show"),
}

__all__ = ["Explainer", "Explanation", "AttentionMap", "SequenceMap", "__version__", "list_methods", "show",
           *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"attnscope.{name}")
    elif name in _NAMES:
        where, attr = _NAMES[name]
        module = getattr(importlib.import_module(where), attr)
    else:
        raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
