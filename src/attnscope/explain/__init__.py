"""Attention maps of a trained model: `explain(model, images, methods, targets, layer)`.

The package itself is callable — `attnscope.explain(model, images, ...)` is `explain.api.explain` —
so that the public call of DESIGN.md and the package's submodules (`attnscope.explain.engine`, ...)
live under one name. Method families register themselves on import; each line below is one family.
"""

from __future__ import annotations

import importlib
import sys
import types

from attnscope.explain.api import differentiable_methods, explain, list_methods, method_spec
from attnscope.explain.context import Oracle
from attnscope.explain.layers import Layer
from attnscope.explain.method import INPUTS, Method, Result, register_method
from attnscope.explain.spec import Explainer, as_explainer
from attnscope.explain.tasks import BoxScore, RegionScore, Similarity

for _family in ("cam", "gradient", "sampled", "perturbation", "transformer", "intrinsic", "captioning", "lrp",
                "fullgrad", "reference", "cam_extra", "scorecam_smooth",
                "masking", "attnlrp", "legrad"):
    importlib.import_module(f"attnscope.explain.{_family}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["INPUTS", "BoxScore", "Explainer", "Layer", "Method", "Oracle", "RegionScore", "Result", "Similarity",
           "as_explainer", "differentiable_methods", "explain", "list_methods", "method_spec", "register_method"]
