"""Keyword arguments kept for one release after they moved: accepted with a `DeprecationWarning`.

    @moved("how", ("methods", "layer", "options", "batch_size"), into_how)
    def model_randomization(model, images, how=..., ...): ...

    model_randomization(model, images, methods=("gradcam",), layer="features")   # warns; is how=Explainer(...)

`moved(param, names, build)`: the old keywords `names` are now fields of parameter `param`'s value;
`build(value, old, given)` makes that value from the one given (or the default) and the old keywords.
The wrapped function's signature (`inspect.signature`, `help`) is the new one. This module sits below
every layer: any module may import it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Build = Callable[[Any, dict[str, Any], bool], Any]  # (value given or default, old keywords, was it given) -> value


def moved(param: str, names: tuple[str, ...], build: Build) -> Callable[[F], F]:
    """Accept the keywords `names`, which moved into parameter `param`, for one release (with a warning)."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)
        if param not in sig.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameter {param!r}")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            old = {k: kwargs.pop(k) for k in names if k in kwargs}
            if not old:
                return fn(*args, **kwargs)
            shown = ", ".join(f"{k}=" for k in old)
            _warn(f"{_name(fn)}({shown}...) is deprecated and goes in the next release: pass {param}= "
                  "instead (see the CHANGELOG)")
            others = {k: kwargs.pop(k) for k in list(kwargs) if k not in sig.parameters}  # for decorators below
            bound = sig.bind_partial(*args, **kwargs)
            given = param in bound.arguments
            value = bound.arguments[param] if given else sig.parameters[param].default
            bound.arguments[param] = build(value, old, given)
            return fn(*bound.args, **bound.kwargs, **others)

        return call  # type: ignore[return-value]

    return wrap


def into(cls: type) -> Build:
    """A `Build` for a dataclass parameter: the old keywords replace fields of the value given (or of `cls()`)."""

    def build(value: Any, old: dict[str, Any], given: bool) -> Any:
        return dataclasses.replace(cls() if value is None else value, **old)

    return build


def renamed(**names: str) -> Callable[[F], F]:
    """Accept old parameter names (`old="new"`) for one release, with a warning."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in names.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old}= and {new}=; pass {new}= only")
                    _warn(f"{_name(fn)}({old}=...) is deprecated and goes in the next release: pass {new}= "
                          "instead")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


def _name(fn: Callable[..., Any]) -> str:
    """How a call is written: `f`, or `Class` for its `__init__`."""
    return fn.__qualname__.removesuffix(".__init__")


def _warn(message: str) -> None:
    """A DeprecationWarning pointing at the caller's line (past every decorator of this module)."""
    level, frame = 3, sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)
