"""attnscope: the attention of image models — trainable, transformer and post-hoc maps,
whether they can be trusted, and how they come about during training.

Submodules and the main names are imported on first use (`ats.explain`, `ats.track`, ...), so
that `import attnscope` — and `attnscope --help` — do not pay for importing torch. Every package
and module of this folder is a submodule (`ats.evaluate`, `ats.stream`, ...): the list is read off
the folder, not written by hand.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see of the names imported on first use below
    from attnscope.explain.api import explain as explain
    from attnscope.explain.spec import Explainer as Explainer

__version__ = "0.1.0"

# OpenMP threads that wait for work spin on their core by default: on a machine whose cores other processes
# keep busy, two PyTorch threads then took 7-12x the time of one; sleeping while they wait (PASSIVE) took
# the time of one thread (bench/explain_threads.py, bench/README.md). libgomp reads this when torch loads
# it, so it is said here, before anything imports torch, and never over the user's own setting.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Every package and public module beside this file (`__main__` is `python -m attnscope`). `explain` among them
# reads as the function `explain` (`_Package`); its package stays importable as `attnscope.explain.<module>`.
_SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
_NAMES = {
    "AttentionMap": ("attnscope.maps", "AttentionMap"),
    "SequenceMap": ("attnscope.maps", "SequenceMap"),
    "Explanation": ("attnscope.maps", "Explanation"),
    "Explainer": ("attnscope.explain.spec", "Explainer"),
    "list_methods": ("attnscope.explain", "list_methods"),
    "list": ("attnscope.registry", "list"),
    "show": ("attnscope.report.show", "show"),
    "Text": ("attnscope.explain.text", "Text"),
    "Caption": ("attnscope.explain.multimodal", "Caption"),
    "explain_tokens": ("attnscope.explain.text_tokens", "explain_tokens"),
}

__all__ = ["Caption", "Explainer", "Explanation", "AttentionMap", "SequenceMap", "Text", "__version__",
           "explain_tokens", "list", "list_methods", "show", *_SUBMODULES]


class _Package(types.ModuleType):
    """attnscope itself: importing the package `attnscope.explain` sets the attribute `explain` to the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "explain" and isinstance(value, types.ModuleType):
            value = value.explain
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"attnscope.{name}")
        module = globals().get(name, module)  # as importing set it (`explain`: the function, see `_Package`)
    elif name in _NAMES:
        where, attr = _NAMES[name]
        module = getattr(importlib.import_module(where), attr)
    else:
        raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
