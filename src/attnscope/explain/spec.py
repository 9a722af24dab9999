"""`Explainer`: how to explain, as one value — methods, layer, options, targets, batch size, output, graph.

    how = Explainer(("gradcam", "ig"), layer="auto", options={"ig": {"steps": 32}})
    maps = how(model, images)                      # an Explanation, as explain(model, images, ("gradcam", "ig"), ...)
    ats.sanity.model_randomization(model, images, how)   # every consumer of maps takes one `how`

The fields are checked once, when the value is made (unknown method names raise with the close
matches, options against their annotations), and are frozen: `how.replace(**changes)` makes a new,
checked value. A consumer (sanity checks, the leaderboard, streaming, the tracker, the guides) takes
`how` and calls it, or `how.replace(...)` of it, so a field added here reaches every one of them.
(Quantus's `explain_func` + `explain_func_kwargs` is the precedent.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.layers import Layer, LayerSpec
from attnscope.explain.method import Method
from attnscope.explain.plan import explain_with
from attnscope.explain.run import OutputSpec
from attnscope.explain.targets import TargetSpec
from attnscope.explain.wrappers import Wrapped, wrapped
from attnscope.registry import METHODS

if TYPE_CHECKING:
    from attnscope.maps import Explanation

Options = Mapping[str, Mapping[str, Any]]


def method_spec(name: str) -> Method | Wrapped:
    """The method a name stands for: a registered method or a `WRAPPER:METHOD`; unknown names raise."""
    return wrapped(name) or METHODS.get(name)


def differentiable_methods() -> list[str]:
    """The methods whose maps can keep their graph (`explain(..., differentiable=True)`)."""
    return [n for n in METHODS if METHODS.get(n).differentiable]


class Frozen(Mapping):
    """A read-only mapping (a method's options, or method → options): made once, never changed."""

    def __init__(self, items: Mapping[str, Any] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(self._items)


@dataclass(frozen=True, eq=False)
class Explainer:
    """How to explain: call it as `how(model, images, targets=None)` for an `Explanation`.

    `methods`: a name or names (`WRAPPER:METHOD` too); `layer`: "auto", a dotted name, a module or a
    `Layer`; `options`: per method, e.g. `{"ig": {"steps": 64}}`; `targets`: what is explained when the
    call gives none (None: the predicted class; see `explain`); `batch_size`: images per explain call
    (same maps, bounded memory); `output`: what the targets score when the model does not return logits;
    `differentiable`: keep the graph (losses on maps train the model).
    """

    methods: str | Sequence[str] = ("gradcam",)  # kept as a tuple of names
    layer: LayerSpec = "auto"
    options: Options | None = field(default_factory=Frozen)  # kept as a read-only mapping
    targets: TargetSpec = None
    batch_size: int | None = None
    output: OutputSpec = None
    differentiable: bool = False

    def __post_init__(self) -> None:
        specs = _methods(self.methods)
        object.__setattr__(self, "methods", tuple(s.name for s in specs))
        object.__setattr__(self, "options", _options(specs, self.options))
        _check_fields(self, specs)

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: TargetSpec = None) -> Explanation:
        """The maps of `model` for `images` (B, C, H, W); `targets` (None: this value's `targets`)."""
        return explain_with(self, model, images, self.targets if targets is None else targets)

    @property
    def specs(self) -> list[Method | Wrapped]:
        """The registered method (or `Wrapped`) of each name, in order."""
        return [method_spec(m) for m in self.methods]

    def replace(self, **changes: Any) -> Explainer:
        """A copy with `changes` (field=value), checked as a new value is."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InputError(f"an Explainer has no field {unknown}; its fields: {sorted(names)}")
        if "methods" in changes and "options" not in changes:  # options of methods no longer asked for go
            kept = {method_spec(m).name for m in _names(changes["methods"])}
            changes["options"] = {k: v for k, v in self.options.items() if k in kept}
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """The fields as JSON-able values (what a run records, and compares on resume).

        `methods`, `layer`, `options` and `batch_size` always; every other field only when it is not
        at its default, so that what older runs recorded stays comparable.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in ALWAYS_RECORDED or not _same(value, default):
                out[f.name] = _jsonable(value)
        return out


ALWAYS_RECORDED = ("methods", "layer", "options", "batch_size")


def as_explainer(how: Explainer | str | Sequence[str] | None, default: Sequence[str] = ("gradcam",)) -> Explainer:
    """`how` as an `Explainer`: one as it is, a method name or names as `Explainer(methods=...)`, None → `default`."""
    if isinstance(how, Explainer):
        return how
    if how is None:
        return Explainer(tuple(default))
    if isinstance(how, str) or (isinstance(how, (list, tuple)) and all(isinstance(m, str) for m in how)):
        return Explainer(_names(how))
    raise InputError(f"how must be an attnscope.Explainer, a method name or a sequence of names, "
                     f"got {type(how).__name__}")


HOW_KEYWORDS = ("methods", "layer", "options", "batch_size")  # what consumers of maps took before they took `how`


def into_how(how: Explainer | str | Sequence[str] | None, old: dict[str, Any], given: bool) -> Explainer:
    """The `how` of a call that used the keywords of the last release (`attnscope.deprecated.moved`)."""
    methods = old.pop("methods", None)
    if methods is not None and given:
        raise TypeError("give how= or methods=, not both")
    base = as_explainer(how if methods is None else methods)
    return base.replace(**old) if old else base


def _names(methods: object) -> tuple[str, ...]:
    if isinstance(methods, str):
        return (methods,)
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise InputError(f"methods must be a method name or a sequence of names, got {methods!r}")
    return tuple(methods)


def _methods(methods: object) -> list[Method | Wrapped]:
    names = _names(methods)
    if not names:
        raise InputError(f"no methods asked for; known: {', '.join(METHODS)}")
    return [method_spec(m) for m in dict.fromkeys(names)]


def _options(specs: Sequence[Method | Wrapped], options: object) -> Frozen:
    if options is None:
        return Frozen()
    if not isinstance(options, Mapping):
        raise InputError(f"options must be a dict of method → {{option: value}}, got {type(options).__name__}")
    asked = {s.name: s for s in specs}
    for name in options:
        if name not in asked:
            raise InputError(f"options given for {name!r}, which is not among the methods asked for: {sorted(asked)}")
    return Frozen({name: Frozen(asked[name].checked_options(opts)) for name, opts in options.items()})


def _check_fields(how: Explainer, specs: Sequence[Method | Wrapped]) -> None:
    """The fields other than methods and options: types and ranges, and differentiable methods."""
    size = how.batch_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InputError(f"batch_size must be a positive integer or None, got {size!r}")
    if not isinstance(how.differentiable, bool):
        raise InputError(f"differentiable must be True or False, got {how.differentiable!r}")
    if how.differentiable:
        fixed = [s.name for s in specs if not s.differentiable]
        if fixed:
            raise NotApplicableError(f"differentiable=True: {', '.join(fixed)} run(s) the model again without a "
                                     f"graph; differentiable methods: {', '.join(differentiable_methods())}")
    output = how.output
    if not (output is None or callable(output) or isinstance(output, str)
            or (isinstance(output, int) and not isinstance(output, bool))):
        raise InputError(f"output must be None, a key, an index or a callable, got {type(output).__name__}")
    if not isinstance(how.layer, (str, nn.Module, Layer)):
        raise InputError(f"layer must be 'auto', a dotted module name, a module or a Layer, "
                         f"got {type(how.layer).__name__}")


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, torch.Tensor) or isinstance(default, torch.Tensor):
        return False
    if isinstance(value, Mapping) and isinstance(default, Mapping):
        return dict(value) == dict(default)
    return value is default or (type(value) is type(default) and value == default)


def _jsonable(value: Any) -> Any:
    """A field's value as JSON: mappings and sequences recursively, tensors as lists, modules and callables by name."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Layer):
        return {"at": _jsonable(value.at), "layout": value.layout, "reshape": _jsonable(value.reshape)}
    if isinstance(value, nn.Module):
        return type(value).__name__
    if callable(value):
        return getattr(value, "__qualname__", None) or type(value).__name__
    return repr(value)

