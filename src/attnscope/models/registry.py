"""The model registry's functions: `register(name)` a builder, `get(name, **cfg)` a model, `names()`.

In their own module, apart from the package's `__init__`, so that a model family imports this and not the
package that imports it (no import circle).

Every model built through `get` carries `attnscope_spec = {"name": ..., "config": {...}}`, which is
what a checkpoint records so that `checkpoint.load` can rebuild it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from attnscope.errors import AttnscopeError, InputError
from attnscope.registry import MODELS

register = MODELS.register


def get(name: str, **cfg: Any) -> nn.Module:
    """Build model `name` with config `cfg`; unknown names and options raise with the known ones."""
    builder = MODELS.get(name)
    num_classes = cfg.get("num_classes", 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"model {name!r}: num_classes must be an integer >= 1, got {num_classes!r}")
    try:
        model = builder(**cfg)
    except AttnscopeError:
        raise
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:  # an option it does not take or fit
        raise InputError(f"model {name!r}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
                         ) from None
    config = getattr(model, "config", None)
    full = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(cfg)
    full.pop("weights", None)  # a local weights file is loaded once; checkpoints carry the tensors
    model.attnscope_spec = {"name": name, "config": _jsonable(full)}
    return model


def check_fields(config: Any, positive: tuple[str, ...] = (), probability: tuple[str, ...] = ()) -> None:
    """Refuse a model config whose `positive` fields are not integers >= 1 (or tuples of them) or whose
    `probability` fields are not in [0, 1); a typo like `widths=[-1]` or `dropout=2` fails with the field named."""
    kind = type(config).__name__
    for name in positive:
        value = getattr(config, name)
        items = value if isinstance(value, tuple) else (value,)
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
            raise InputError(f"{kind}.{name} must be {'integers' if isinstance(value, tuple) else 'an integer'} "
                             f">= 1, got {value!r}")
    for name in probability:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise InputError(f"{kind}.{name} must be a number in [0, 1), got {value!r}")


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
