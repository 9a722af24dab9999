"""Name → object registries for methods, models and data sets.

One small class, used three times: `register` raises on a duplicate name, `get` raises
`UnknownNameError` listing the known names, `names` lists them. The CLI, the tracker and the
benchmark look things up by name instead of growing `if name == ...` chains.
"""

from __future__ import annotations

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

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

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
