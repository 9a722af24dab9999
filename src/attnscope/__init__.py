"""attnscope: the attention of image models — trainable, transformer and post-hoc maps,
whether they can be trusted, and how they come about during training."""

from __future__ import annotations

from attnscope import data, errors, explain, metrics, models, sanity
from attnscope.explain import list_methods
from attnscope.maps import AttentionMap

__version__ = "0.1.0"

__all__ = ["AttentionMap", "__version__", "data", "errors", "explain", "list_methods", "metrics", "models",
           "report", "sanity", "show"]


def __getattr__(name: str):
    """`ats.show` and `ats.report` are imported on first use (they bring matplotlib)."""
    if name == "show":
        from attnscope.report.show import show

        return show
    if name == "report":
        import attnscope.report as report

        return report
    raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
