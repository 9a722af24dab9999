"""The hook engine: one forward and at most one backward pass capture what every method of a call reads.

`model_guard` leaves a model exactly as found (training flags, `requires_grad`, `.grad`, hooks),
also when something raises. `capture` registers its hooks, runs the passes and removes the hooks
in `finally`; what it returns is detached, so no graph outlives the call.

Two things keep the shared pass close to the cost of one plain forward:
- parameters are frozen inside `model_guard`, so no weight gradient is ever computed;
- when no input gradient is asked for, the graph starts at the chosen layer (its output is
  recorded as a fresh leaf), so the forward up to the layer runs without autograd bookkeeping
  and the backward stops at the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.targets import Target, TargetSpec, resolve


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the block; then restore every flag, `requires_grad` and `.grad`."""
    training = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _, _ in params:
            p.requires_grad_(False)
        yield model
    finally:
        for module, flag in training:
            module.training = flag
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextmanager
def recording(module: nn.Module, store: list[torch.Tensor], leaf: bool = False) -> Iterator[None]:
    """Record `module`'s output tensors into `store` while the block runs.

    The hook hands a clone downstream, so an in-place op after the layer (ReLU(inplace=True))
    cannot overwrite the recorded activations or the tensor their gradient is taken for.
    `leaf=True` records a detached copy that requires grad: the graph then starts at the layer.
    """
    handle = module.register_forward_hook(_recorder(store.append, leaf, "the chosen layer"))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def recording_each(modules: Sequence[nn.Module], store: list[tuple[int, torch.Tensor]]) -> Iterator[None]:
    """Record the outputs of several modules into `store` as (index in `modules`, tensor), in the order they run.

    Same hook as `recording` (a clone goes downstream), never a leaf: a gradient with respect to
    an early module's output must flow through every later one.
    """
    handles = [
        m.register_forward_hook(_recorder(lambda out, i=i: store.append((i, out)), False, "a recorded module"))
        for i, m in enumerate(modules)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _recorder(keep: Callable[[torch.Tensor], None], leaf: bool, what: str) -> Callable:
    def hook(_module: nn.Module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            kind = type(output).__name__
            raise InputError(f"{what} returns {kind}, not a tensor; choose another layer")
        if leaf:
            output = output.detach().requires_grad_(torch.is_grad_enabled())
        keep(output)
        return output.clone()

    return hook


class _Switch:
    """A flag read at backward time: whether ReLU gradients are guided."""

    on: bool = False


class _GuidedIdentity(torch.autograd.Function):
    """Identity forward; backward keeps only positive gradients while the switch is on."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, switch: _Switch) -> torch.Tensor:
        ctx.switch = switch
        return x.clone()  # a new tensor, so in-place ops downstream stay legal

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad.clamp_min(0) if ctx.switch.on else grad), None


@contextmanager
def guided_relus(model: nn.Module, switch: _Switch) -> Iterator[int]:
    """Make every `nn.ReLU` module of `model` guided (Springenberg et al. 2015) while `switch.on`.

    A forward hook passes each ReLU output through `_GuidedIdentity`; with ReLU's own backward
    (zero where the input ≤ 0) this gives the guided rule: R_in = 1[x > 0] · 1[R_out > 0] · R_out.
    Works with ReLU(inplace=True). Yields the number of ReLU modules hooked.
    """

    def hook(_module: nn.Module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            return _GuidedIdentity.apply(output, switch)
        return None

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Capture:
    """What one shared pass saw. Everything is detached."""

    logits: torch.Tensor  # (B, K)
    scores: torch.Tensor  # (B,) the explained score of each image
    activations: torch.Tensor | None = None  # (B, C, h, w) output of the chosen layer
    gradients: torch.Tensor | None = None  # (B, C, h, w) d score / d activations
    input_grad: torch.Tensor | None = None  # (B, C, H, W) d score / d input
    guided_grad: torch.Tensor | None = None  # (B, C, H, W) d score / d input with guided ReLUs
    probes: tuple[torch.Tensor, ...] = ()  # outputs of the recorded modules (attention weights), forward order
    probe_grads: tuple[torch.Tensor, ...] = ()  # d score / d each of `probes`, same order
    probe_names: tuple[str, ...] = ()  # the name of the module behind each of `probes`
    own_attention: dict[str, torch.Tensor] | None = None  # what forward(x, return_attention=True) gave besides logits


def run_model(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              batch: int | None = None) -> torch.Tensor:
    """`model(x)` checked to give logits (batch, K) (batch defaults to len(x)); else InputError."""
    batch = x.shape[0] if batch is None else batch
    try:
        logits = model(x)
    except RuntimeError as e:
        if "has been modified by an inplace operation" in str(e):
            raise
        raise InputError(f"the model cannot run on images of shape {tuple(x.shape)}: {e}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"expected the model to return logits ({batch}, K), got {shape}")
    return logits


def capture(
    model: nn.Module,
    x: torch.Tensor,
    target: Target | TargetSpec,
    layer: nn.Module | None = None,
    layer_grad: bool = False,
    input_grad: bool = False,
    guided_grad: bool = False,
    probes: Sequence[tuple[str, nn.Module]] = (),
    probe_grad: bool = False,
    own_attention: bool = False,
) -> tuple[Capture, Target]:
    """One forward pass (recording `layer` and each of `probes`) and the backward passes asked for.

    Plain gradients (layer, input and/or probes) come from one backward; guided input gradients
    from a second backward over the same graph with the ReLUs switched to the guided rule, so
    Grad-CAM, saliency, Guided Backprop and gradient-weighted rollout asked together cost one
    forward. `probes` are (name, module) pairs; each must run exactly once, and their outputs come
    back in the order they ran.
    `target` may be unresolved (None, int, tensor, callable); it is resolved from this very pass.
    `own_attention`: the pass is `model(x, return_attention=True)` and the model's own maps are kept.
    """
    store: list[torch.Tensor] = []
    seen: list[tuple[int, torch.Tensor]] = []
    from_input = input_grad or guided_grad or probe_grad  # probe gradients need the whole graph
    x = x.detach().requires_grad_(from_input)
    switch = _Switch()
    with ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(layer_grad or from_input))
        if layer is not None:
            stack.enter_context(recording(layer, store, leaf=not from_input))
        if probes:
            stack.enter_context(recording_each([module for _, module in probes], seen))
        if guided_grad:
            stack.enter_context(guided_relus(model, switch))
        attention: dict[str, torch.Tensor] = {}
        forward = _keeping_attention(model, attention) if own_attention else model
        logits = run_model(forward, x.clone())  # a model that edits its input in place edits a copy
        if layer is not None and len(store) != 1:
            ran = "did not run" if not store else f"ran {len(store)} times"
            raise InputError(f"the chosen layer {ran} in the forward pass; choose a layer that runs once")
        _check_ran_once([name for name, _ in probes], [i for i, _ in seen])
        target = target if isinstance(target, Target) else resolve(target, logits)
        scores = target.score(logits)
        outputs = [out for _, out in seen]
        wrt = ([store[0]] if layer_grad else []) + ([x] if input_grad else []) + (outputs if probe_grad else [])
        grads = _grad(scores, wrt, retain=guided_grad)
        if guided_grad:
            switch.on = True
            guided = _grad(scores, [x], retain=False)[0]
    return (
        Capture(
            logits=logits.detach(),
            scores=scores.detach(),
            activations=store[0].detach() if store else None,
            gradients=grads.pop(0) if layer_grad else None,
            input_grad=grads.pop(0) if input_grad else None,
            guided_grad=guided if guided_grad else None,
            probes=tuple(out.detach() for out in outputs),
            probe_grads=tuple(grads) if probe_grad else (),
            probe_names=tuple(probes[i][0] for i, _ in seen),
            own_attention={k: v.detach() for k, v in attention.items()} if own_attention else None,
        ),
        target,
    )


def _keeping_attention(model: nn.Module, into: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` as a function of x giving logits, that puts the maps of forward(x, return_attention=True) in `into`."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits, attention = model(x, return_attention=True)
        into.update(attention)
        return logits

    return forward


def _check_ran_once(names: list[str], ran: list[int]) -> None:
    for i, name in enumerate(names):
        count = ran.count(i)
        if count != 1:
            times = "did not run" if count == 0 else f"ran {count} times"
            raise InputError(f"{name!r} {times} in the forward pass; a recorded module must run once")


def _grad(scores: torch.Tensor, wrt: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
    """d Σ scores / d each of `wrt`; zeros for a tensor the scores do not depend on."""
    if not wrt:
        return []
    if not scores.requires_grad:
        return [torch.zeros_like(t) for t in wrt]
    grads = torch.autograd.grad(scores.sum(), wrt, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True)]


def input_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, chunk: int | None = None
) -> torch.Tensor:
    """d score / d x for a batch (N, C, H, W), in chunks of `chunk` images (None: all at once)."""
    step = chunk or x.shape[0]
    parts = []
    for i in range(0, x.shape[0], step):
        cap, _ = capture(model, x[i : i + step], target.take(slice(i, i + step)), input_grad=True)
        parts.append(cap.input_grad)
    return torch.cat(parts)


@torch.no_grad()
def logits(
    model: nn.Module, x: torch.Tensor, chunk: int | None = None, channels_last: bool = False
) -> torch.Tensor:
    """Logits (N, K) of `x` without gradients, in chunks of `chunk` images.

    `channels_last` lays the inputs out channels-last (NHWC), which many CNNs run faster on a
    CPU (pooling and convolutions skip layout conversions); the logits agree up to float rounding.
    """
    step = chunk or x.shape[0]
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    parts = [run_model(model, x[i : i + step].contiguous(memory_format=layout)) for i in range(0, x.shape[0], step)]
    return torch.cat(parts)


@torch.no_grad()
def scores(model: nn.Module, x: torch.Tensor, target: Target, chunk: int | None = None) -> torch.Tensor:
    """The explained score (N,) of each image of `x`, without gradients, in chunks of `chunk`."""
    step = chunk or x.shape[0]
    parts = [
        target.take(slice(i, i + step)).score(run_model(model, x[i : i + step]))
        for i in range(0, x.shape[0], step)
    ]
    return torch.cat(parts)


@torch.no_grad()
def logits_with_layer_output(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, output: torch.Tensor
) -> torch.Tensor:
    """Logits (N, K) of the model on one image `x` (1, C, H, W) when `layer` outputs `output` (N, ...).

    The layers before `layer` run once, on the one image; the layers after it run on the N
    outputs. A model whose later layers reuse earlier tensors in a way that cannot take the
    larger batch (a concatenation, a reshape by the input's batch size) gets the image repeated
    N times instead: the same logits, at the full cost.
    """
    n = output.shape[0]

    def replace(_module: nn.Module, _inputs, _output) -> torch.Tensor:
        return output

    handle = layer.register_forward_hook(replace)
    try:
        try:
            out = model(x)
        except RuntimeError:
            out = None
        if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n):
            out = run_model(model, x.expand(n, *x.shape[1:]), batch=n)
    finally:
        handle.remove()
    return out
