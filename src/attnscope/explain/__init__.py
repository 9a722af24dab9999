"""Attention maps of a trained model: `explain(model, images, methods, targets, layer)`.

Method families register themselves on import; each line below is one family.
"""

from __future__ import annotations

import importlib

from attnscope.explain.api import Context, Method, explain, list_methods, register_method

for _family in ("cam", "gradient", "sampled", "perturbation"):
    importlib.import_module(f"attnscope.explain.{_family}")

__all__ = ["Context", "Method", "explain", "list_methods", "register_method"]
