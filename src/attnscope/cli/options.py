"""Option parsing shared by commands: `key=value` settings, method lists, model sources."""

from __future__ import annotations

import json
from typing import Any

from attnscope.errors import InputError


def parse_settings(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """`("widths=[16,32]", "dropout=0.1")` → `{"widths": [16, 32], "dropout": 0.1}` (values as JSON, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} must look like key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_list(text: str, what: str) -> list[str]:
    """"a,b, c" → ["a", "b", "c"]; an empty list raises."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError(f"{what}: give at least one name")
    return items


def load_model(source: str, weights: str | None = None, num_classes: int | None = None,
               options: dict[str, Any] | None = None):
    """A model from any source `models.sources.build` accepts; `(model in eval mode, info)`.

    info holds the checkpoint header or the model's spec, and "source": kind, weights file, sha256,
    and whether the weights are random.
    """
    from attnscope.models import sources

    return sources.build(source, weights, num_classes, options)


def method_options(items: tuple[str, ...], flag: str = "--method-opt",
                   form: str = "METHOD.OPTION=VALUE") -> dict[str, dict[str, Any]]:
    """`("ig.steps=16", "gradcam.relu=false")` → `{"ig": {"steps": 16}, "gradcam": {"relu": False}}`."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_settings(items, flag).items():
        method, dot, option = key.partition(".")
        if not dot or not method or not option:
            raise InputError(f"{flag} must look like {form} (e.g. ig.steps=64), got {key!r}")
        out.setdefault(method, {})[option] = value
    return out
