"""Reuse across the steps of a randomisation test: the modules that run before the lowest
randomised block compute the same outputs at every step, so their outputs are computed once per
input and replayed afterwards — with their autograd graph kept, so gradients with respect to the
input still flow through them (saliency, IG).

This matters most for methods that run the model on many inputs per image (IG's path points,
SmoothGrad's noisy copies, sMPRT's noisy copies): the same inputs come back at every step of a
top-down cascade, and the part of the network below the randomised block is never run twice.

How: one trace records, for every module, when it starts and finishes in a forward pass. For a
step whose lowest randomised block starts at time t, the modules that finish before t (and ran
once) are unchanged, and their `forward` is wrapped for the step. The wrapper recognises the
model's input (a forward pre-hook on the model compares it with the inputs seen before,
`torch.equal`), replays the recorded output through `_Replay` (whose backward is the
vector–Jacobian product through the kept graph), or computes and records it. Nested modules are
wrapped too, so recording a module records its children, and when a later step randomises a
block inside it, its unchanged children replay. A module with someone else's hooks or patched forwards
inside it (guided ReLUs, recorded layers, explicit attention) is not replayed: its pass runs as
usual, so every method sees exactly what it would see without reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


class _Replay(torch.autograd.Function):
    """Forward: a copy of the recorded output. Backward: d/d input through the recorded graph."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, entry: Entry) -> torch.Tensor:
        ctx.entry = entry
        return entry.output.detach().clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        e = ctx.entry
        (g,) = torch.autograd.grad(e.output, e.leaf, grad, retain_graph=True)
        return g, None


@dataclass
class Entry:
    """A recorded module output; `leaf` is the input it was computed from when a graph was kept."""

    output: torch.Tensor
    leaf: torch.Tensor | None = None
    nbytes: int = 0


@dataclass
class _Slot:
    """Everything recorded for one model input."""

    x: torch.Tensor
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    calls: int
    simple: bool  # called with one tensor and no keyword arguments, returning one tensor


class PrefixReuse:
    """Replays the outputs of unchanged modules across the steps of a randomisation test.

    `trace(model, images)` once; then for each step `with reuse.step(start): ...`, `start` being the
    time (from `start_of(name)`) at which the lowest randomised block begins. `budget` bytes bound
    what is kept (outputs and the tensors their graphs save); beyond it passes just run.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, budget: int = 2**31) -> None:
        self.model, self.budget = model, budget
        self.spans = _trace(model, images[:1])
        self.slots: list[_Slot] = []
        self.used = 0
        self.hits = self.misses = 0
        self._current: _Slot | None = None
        self._ours: dict[int, Callable] = {}  # id of a module whose forward this object wrapped → the wrapper

    def start_of(self, name: str) -> int:
        return self.spans[name].start

    def unchanged(self, before: int) -> set[str]:
        """The modules that finish before time `before`, ran once and take one tensor (never the model itself)."""
        return {n for n, s in self.spans.items() if n and s.end < before and s.calls == 1 and s.simple}


    @contextmanager
    def step(self, before: int) -> Iterator[None]:
        """Replay the unchanged modules of a step whose lowest randomised block starts at `before`."""
        valid = self.unchanged(before)
        for slot in self.slots:  # an entry of a module that now contains a randomised block is stale
            for name in [n for n in slot.entries if n not in valid]:
                self.used -= slot.entries.pop(name).nbytes
        keep = valid
        modules = dict(self.model.named_modules())
        self._ours = {}
        handle = self.model.register_forward_pre_hook(self._find_slot)
        try:
            for name in keep:
                module = modules[name]
                if "forward" in vars(module):
                    continue  # someone else's rewrite: leave it alone
                module.forward = self._ours[id(module)] = self._wrap(name, module, module.forward)
            yield
        finally:
            handle.remove()
            for module in modules.values():
                if id(module) in self._ours:
                    del module.forward
            self._ours = {}
            self._current = None

    def clear(self) -> None:
        self.slots.clear()
        self.used = 0

    def _find_slot(self, _module: nn.Module, args: tuple) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self._current = None
        if x is None:
            return
        for slot in self.slots:
            if slot.x.shape == x.shape and slot.x.dtype == x.dtype and slot.x.device == x.device \
                    and torch.equal(slot.x, x):
                self._current = slot
                return
        if self.used + x.numel() * x.element_size() <= self.budget:
            self._current = _Slot(x.detach().clone())
            self.slots.append(self._current)
            self.used += x.numel() * x.element_size()

    def _wrap(self, name: str, module: nn.Module, forward):
        def replaying(*args, **kwargs):
            slot = self._current
            simple = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            rewrapped = vars(module).get("forward") is not replaying  # someone else's rewrite on top of ours
            watched = torch._C._len_torch_function_stack() > 0  # a function mode reads the calls inside (attention)
            if slot is None or not simple or rewrapped or watched or _hooked_inside(module, self._ours):
                return forward(*args, **kwargs)
            x = args[0]
            needs_graph = torch.is_grad_enabled() and x.requires_grad
            entry = slot.entries.get(name)
            if entry is None or (needs_graph and entry.leaf is None):
                entry = self._record(slot, name, forward, x, needs_graph)
                self.misses += 1
                if not isinstance(entry, Entry):
                    return entry  # over the budget (or not a tensor): the plain output
            else:
                self.hits += 1
            if needs_graph:
                return _Replay.apply(x, entry)
            return entry.output.detach().clone()

        return replaying

    def _record(self, slot: _Slot, name: str, forward, x: torch.Tensor, graph: bool):
        """Compute `forward(x)` and record it as an `Entry`; over the budget, return the output itself."""
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        leaf = x.detach().requires_grad_(graph)
        with torch.set_grad_enabled(graph), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward(leaf)
        if not isinstance(out, torch.Tensor):
            return forward(x)
        nbytes = saved[0] + out.numel() * out.element_size()
        old = slot.entries.get(name)
        freed = old.nbytes if old is not None else 0
        if self.used - freed + nbytes > self.budget:
            return _Replay.apply(x, Entry(out, leaf)) if graph else out
        self.used += nbytes - freed
        entry = Entry(out if graph else out.detach(), leaf if graph else None, nbytes)
        slot.entries[name] = entry
        return entry


def _hooked_inside(module: nn.Module, ours: dict[int, Callable]) -> bool:
    """Whether anything below `module` has hooks or a forward rewritten by someone else (then its pass
    must really run)."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    for m in module.modules():
        if m is module:
            continue
        rewritten = "forward" in vars(m) and vars(m)["forward"] is not ours.get(id(m))
        if m._forward_hooks or m._forward_pre_hooks or rewritten:
            return True
    return False


def _trace(model: nn.Module, x: torch.Tensor) -> dict[str, _Span]:
    """When each module starts and finishes (a shared clock) in one forward pass, and how often it runs."""
    clock = [0]
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    calls: dict[str, int] = {}
    simple: dict[str, bool] = {}

    def pre(name: str):
        def hook(_m, args, kwargs):
            clock[0] += 1
            starts.setdefault(name, clock[0])
            calls[name] = calls.get(name, 0) + 1
            simple[name] = simple.get(name, True) and len(args) == 1 and not kwargs and \
                isinstance(args[0], torch.Tensor)
        return hook

    def post(name: str):
        def hook(_m, _args, output):
            clock[0] += 1
            ends[name] = clock[0]
            simple[name] = simple[name] and isinstance(output, torch.Tensor)
        return hook

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(module.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: _Span(starts[n], ends[n], calls[n], simple[n]) for n in starts if n in ends}
