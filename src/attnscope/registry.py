"""Name → object registries, and one listing call for all of them: `ats.list("methods", "*cam*")`.

One small class: `register` raises on a duplicate name (timm only warns; we refuse), `get` raises
`UnknownNameError` listing the close and known names, `names` lists them and `list(pattern)` filters
them with shell wildcards (timm's `list_models(filter)`). The CLI, the tracker and the benchmark look
things up by name instead of growing `if name == ...` chains.

Each registry lives beside what it registers; `REGISTRIES` says where, by module path, so that this
module imports nothing of attnscope above `errors` and `list` imports a registry's module only when asked.
"""

from __future__ import annotations

import builtins
import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from attnscope.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects of one kind ("method", "model", "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Add `obj` under `name`; usable as `reg.register("x", obj)` or as `@reg.register("x")`."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as `name`; raises `UnknownNameError` listing close and known names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self) -> builtins.list[str]:
        """Registered names, in registration order."""
        return builtins.list(self._items)

    def list(self, pattern: str | None = None) -> builtins.list[str]:
        """Registered names matching the shell wildcard `pattern` (`*`, `?`, `[..]`; case-sensitive), in
        registration order; all of them when `pattern` is None."""
        return [n for n in self._items if pattern is None or fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# The three registries of DESIGN.md. Entries are added by the modules that define them
# (`attnscope.models`, `attnscope.explain`, `attnscope.data`) when those are imported.
METHODS: Registry = Registry("method")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")

# Every registry by the name `ats.list` knows it by: (the module that fills it, where the registry is).
# Importing the first registers every entry; the second is "module:NAME".
REGISTRIES: dict[str, tuple[str, str]] = {
    "methods": ("attnscope.explain", "attnscope.registry:METHODS"),
    "models": ("attnscope.models", "attnscope.registry:MODELS"),
    "datasets": ("attnscope.data", "attnscope.registry:DATASETS"),
    "metrics": ("attnscope.metrics", "attnscope.metrics.declare:METRICS"),
    "similarities": ("attnscope.metrics", "attnscope.metrics.similarity:SIMILARITIES"),
    "substrates": ("attnscope.metrics", "attnscope.metrics.faithfulness:SUBSTRATES"),
    "perturbations": ("attnscope.metrics", "attnscope.metrics.perturbations:PERTURBATIONS"),
    "wrappers": ("attnscope.explain", "attnscope.explain.wrappers:WRAPPERS"),
    "rewrites": ("attnscope.explain", "attnscope.explain.rewrites:REWRITES"),
    "lrp-composites": ("attnscope.explain", "attnscope.explain.lrp:COMPOSITES"),
    "lrp-canonizers": ("attnscope.explain", "attnscope.explain.lrp:CANONIZERS"),
    "attention-adapters": ("attnscope.explain", "attnscope.explain.adapters:ATTENTION"),
    "calibrations": ("attnscope.sanity", "attnscope.sanity.calibration:CALIBRATIONS"),
    "inits": ("attnscope.sanity", "attnscope.sanity.blocks:INITS"),
    "noises": ("attnscope.evaluate", "attnscope.evaluate.robustness:NOISES"),
    "robustness-metrics": ("attnscope.evaluate", "attnscope.evaluate.robustness:METRICS"),
    "presets": ("attnscope.evaluate.presets", "attnscope.evaluate.presets:PRESETS"),
    "guides": ("attnscope.guide", "attnscope.guide.losses:GUIDES"),
    "regions": ("attnscope.train", "attnscope.train.guidance:REGIONS"),
    "tasks": ("attnscope.train", "attnscope.train.tasks:TASKS"),
}


def registry(kind: str) -> Registry:
    """The registry `ats.list` calls `kind` ("methods", "models", "metrics", ...), with its entries registered."""
    if kind not in REGISTRIES:
        raise UnknownNameError("registry", kind, REGISTRIES)
    fills, where = REGISTRIES[kind]
    importlib.import_module(fills)
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


def list(kind: str = "methods", pattern: str | None = None) -> builtins.list[str]:  # noqa: A001 (timm's name)
    """The names registered as `kind`, filtered by the shell wildcard `pattern`: `ats.list("methods", "*cam*")`.

    `kind`: one of `REGISTRIES` ("methods", "models", "datasets", "metrics", "guides", "calibrations",
    "wrappers", ...). Names come in registration order (families together). `ats.list_methods()` keeps
    giving methods with their kind.
    """
    return registry(kind).list(pattern)
