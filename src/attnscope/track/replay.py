"""Reruns that change a model only from some of its modules on reuse what the unchanged pass computed before them.

The tracker's substitution test (`causal.py`, Wiegreffe & Pinter, EMNLP 2019) runs the model again with its
attention modules' outputs replaced. Whatever the forward computed before the first of those modules started
is the same in both passes: for LTPA the whole backbone and the global feature. `Upstream` records, during the
unchanged pass, the outputs of the outermost modules whose forwards finished before any `changed` module
started; while `replaying`, those modules return them instead of running, so a rerun costs the attention
modules and what follows them (the head), not the backbone. The same outputs as a full rerun, exactly.

    upstream = Upstream(net, net.estimators)
    with upstream.recording():
        base = run(x)                      # the unchanged pass, in chunks
    with substituted_attention(net, "uniform"), upstream.replaying():
        changed = run(x)                   # the same chunks, one to one, backbone not run

A forward whose recorded outputs are not tensors, are changed in place later in that forward, differ in
structure between chunks or outgrow `limit` bytes leaves nothing to replay: `replaying` then runs the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn


class Upstream:
    """The outputs of the modules of `model` that run before any of `changed` (module docstring)."""

    def __init__(self, model: nn.Module, changed: Sequence[nn.Module], limit: int = 1 << 30) -> None:
        self.model, self.limit = model, limit
        inside = {id(d) for m in changed for d in m.modules()}
        self.changed = [m for m in changed]
        self.candidates = [m for m in model.modules() if m is not model and id(m) not in inside]
        parents = {id(c): m for m in model.modules() for c in m.children()}
        self.ancestors = {id(m): _ancestors(m, parents, model) for m in self.candidates}
        self.forwards: list[tuple[int, list[tuple[nn.Module, torch.Tensor]]]] = []  # (batch, [(module, output)])
        self.valid, self.bytes = True, 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record every forward of the model in the block (one per chunk)."""
        state: dict[str, Any] = {}

        def start(_m: nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            state.update(blocked=False, calls=[], batch=x.shape[0] if isinstance(x, torch.Tensor) else -1)

        def block(_m: nn.Module, _args: tuple) -> None:
            state["blocked"] = True

        def finished(m: nn.Module, _args: tuple, out: Any) -> None:
            if not state.get("blocked", True):
                state["calls"].append((m, out, out._version if isinstance(out, torch.Tensor) else None))

        def end(_m: nn.Module, _args: tuple, _out: Any) -> None:
            self._keep(state["batch"], state["calls"])

        with ExitStack() as stack:
            hooks = [self.model.register_forward_pre_hook(start), self.model.register_forward_hook(end)]
            hooks += [m.register_forward_pre_hook(block) for m in self.changed]
            hooks += [m.register_forward_hook(finished) for m in self.candidates]
            for h in hooks:
                stack.callback(h.remove)
            yield

    def _keep(self, batch: int, calls: list[tuple[nn.Module, Any, int | None]]) -> None:
        called = {id(m) for m, _, _ in calls}
        outer = [(m, out, version) for m, out, version in calls if not self.ancestors[id(m)] & called]
        if any(not isinstance(out, torch.Tensor) or out._version != version for _, out, version in outer):
            self.valid = False  # not a tensor, or changed in place after it was made: replaying could differ
        kept = [(m, out) for m, out, _ in outer]
        if self.forwards and [m for m, _ in kept] != [m for m, _ in self.forwards[0][1]]:
            self.valid = False  # the chunks ran different modules
        self.bytes += sum(out.numel() * out.element_size() for _, out in kept if isinstance(out, torch.Tensor))
        if self.bytes > self.limit:
            self.valid = False
        self.forwards.append((batch, kept) if self.valid else (batch, []))
        if not self.valid:
            self.forwards = [(b, []) for b, _ in self.forwards]  # nothing held that will not be used

    @contextmanager
    def replaying(self) -> Iterator[bool]:
        """In the block, the model's forwards (the recorded chunks, in order) reuse the recorded outputs; yields
        whether they do (False: nothing valid was recorded and the model runs in full)."""
        if not self.valid or not self.forwards:
            yield False
            return
        queue: dict[int, list[torch.Tensor]] = {}
        pending = iter(self.forwards)

        def start(_m: nn.Module, args: tuple) -> None:
            batch, kept = next(pending, (None, None))
            x = args[0] if args else None
            if kept is None or not isinstance(x, torch.Tensor) or x.shape[0] != batch:
                raise RuntimeError("a replayed forward does not match the recorded chunks")
            queue.clear()
            for m, out in kept:
                queue.setdefault(id(m), []).append(out)

        def replace(m: nn.Module, stack: ExitStack) -> None:
            own, had = m.forward, m.__dict__.get("forward")

            def forward(*args: Any, **kwargs: Any) -> Any:
                waiting = queue.get(id(m))
                return waiting.pop(0) if waiting else own(*args, **kwargs)  # later calls run (they may differ)
            m.forward = forward
            stack.callback(lambda: m.__dict__.pop("forward") if had is None else setattr(m, "forward", had))

        replaced = {id(m): m for _, kept in self.forwards for m, _ in kept}
        with ExitStack() as stack:
            handle = self.model.register_forward_pre_hook(start)
            stack.callback(handle.remove)
            for m in replaced.values():
                replace(m, stack)
            yield True


def _ancestors(module: nn.Module, parents: dict[int, nn.Module], root: nn.Module) -> set[int]:
    out, m = set(), parents.get(id(module))
    while m is not None and m is not root:
        out.add(id(m))
        m = parents.get(id(m))
    return out
