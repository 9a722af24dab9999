"""Attention maps of a trained model: `explain(model, images, methods, targets, layer)`; `Explainer` (how to explain).

`attnscope.explain`, read as an attribute of the `attnscope` package, is the function `explain`
(`explain.api.explain`: its own signature, docstring and `help`); this package stays importable by name
(`import attnscope.explain.engine`, `from attnscope.explain import Layer`), and its public names and modules
are also attributes of that function, so `attnscope.explain.Layer` reads as before. The plumbing other
layers use (`model_guard`, `run_model`, `logits`, `select_output`, `resolve_layer`, the target and layer
specs) is public here: nothing outside this package imports `explain.engine`.
Method families register themselves on import; each line below is one family.
"""

from __future__ import annotations

import importlib
import sys
import types

from attnscope.explain.api import differentiable_methods, explain, list_methods, method_spec
from attnscope.explain.context import Oracle
from attnscope.explain.layers import Layer, LayerSpec, resolve_layer
from attnscope.explain.method import INPUTS, Method, Result, register_method
from attnscope.explain.run import OutputSpec, logits, model_guard, nhwc, run_model, runner, select_output
from attnscope.explain.spec import HOW_KEYWORDS, Explainer, as_explainer, into_how
from attnscope.explain.targets import TargetSpec
from attnscope.explain.tasks import BoxScore, RegionScore, Similarity

for _family in ("cam", "gradient", "sampled", "perturbation", "transformer", "intrinsic", "captioning", "lrp",
                "fullgrad", "reference", "cam_extra", "scorecam_smooth",
                "masking", "attnlrp", "legrad", "multimodal", "crossmodal", "text", "mm_adapters"):
    importlib.import_module(f"attnscope.explain.{_family}")



class _Package(types.ModuleType):
    """This package: a public name or module set on it later (a submodule imported) is set on `explain` too."""

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        _mirror(name, value)


def _mirror(name: str, value: object) -> None:
    public = name in __all__ or (isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}")
    if public and name != "explain":
        setattr(explain, name, value)


__all__ = ["HOW_KEYWORDS", "INPUTS", "BoxScore", "Explainer", "Layer", "LayerSpec", "Method", "Oracle", "OutputSpec",
           "RegionScore", "Result", "Similarity", "TargetSpec", "as_explainer", "differentiable_methods", "explain",
           "into_how", "list_methods", "logits", "method_spec", "model_guard", "nhwc", "register_method",
           "resolve_layer", "run_model", "runner", "select_output"]

for _name, _value in list(globals().items()):
    _mirror(_name, _value)
sys.modules[__name__].__class__ = _Package
