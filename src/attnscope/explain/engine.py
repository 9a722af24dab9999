"""The hook engine: one forward and at most one backward pass capture what every method of a call reads.

`capture` registers its hooks, runs the passes and removes the hooks in `finally`; what it returns
is detached unless `differentiable=True`. It runs inside `model_guard` (`explain.run`), which
leaves the model exactly as found (training flags, `requires_grad`, `.grad`), also when something raises.

Two things keep the shared pass close to the cost of one plain forward:
- parameters are frozen inside `model_guard`, so no weight gradient is ever computed;
- when no input gradient is asked for, the graph starts at the chosen layer (its output is
  recorded as a fresh leaf), so the forward up to the layer runs without autograd bookkeeping
  and the backward stops at the layer.
With K targets per image, the gradients of the K scores come from one batched backward
(`is_grads_batched`) over the one graph, or K backward passes where batching does not apply.
`differentiable=True` keeps the graph instead (`create_graph`): parameters stay trainable, the
model keeps its training mode, and losses on the maps reach the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.rewrites import Switch, rewritten
from attnscope.explain.run import OutputSpec, logits_of, run_model, select_output
from attnscope.explain.run import logits as logits  # re-exported: older code reads them here
from attnscope.explain.run import model_guard as model_guard
from attnscope.explain.targets import Target, TargetSpec, resolve
from attnscope.modules import as_nhwc, nhwc_pass


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
        if leaf or (torch.is_grad_enabled() and not output.requires_grad):  # no path from the input: a leaf,
            output = output.detach().requires_grad_(torch.is_grad_enabled())  # so its gradient exists (text attention)
        keep(output)
        return output.clone()

    hook.keeps_values = True  # the same values downstream (sanity.reuse may replay the modules after it)
    return hook


@dataclass(frozen=True)
class Capture:
    """What one shared pass saw. Per image: logits, activations, probes; per row (image × target): the rest."""

    logits: torch.Tensor  # (B, N) the model's (selected) output; a list for detectors
    scores: torch.Tensor  # (B·K,) the explained score of each row
    table: torch.Tensor  # (B,) or (B, K) the explained classes (-1 for a callable)
    per_image: int | None  # K, or None for one target per image
    activations: torch.Tensor | None = None  # (B, ...) output of the chosen layer
    gradients: torch.Tensor | None = None  # (B·K, ...) d score / d activations
    input_grad: torch.Tensor | None = None  # (B·K, C, H, W) d score / d input
    guided_grad: torch.Tensor | None = None  # (B·K, C, H, W) d score / d input with guided ReLUs
    probes: tuple[torch.Tensor, ...] = ()  # (B, ...) outputs of the recorded modules (attention weights), forward order
    probe_grads: tuple[torch.Tensor, ...] = ()  # (B·K, ...) d score / d each of `probes`, same order
    probe_names: tuple[str, ...] = ()  # the name of the module behind each of `probes`
    own_attention: dict[str, torch.Tensor] | None = None  # what forward(x, return_attention=True) gave besides logits
    bias_grads: tuple[torch.Tensor, ...] = ()  # (B·K, C, h, w) d score / d the output of each `biased` module

    @property
    def rows(self) -> int:
        """Targets per image (1 for the one-target forms)."""
        return self.per_image or 1


NEEDS = frozenset({"layer", "layer_grad", "input_grad", "guided_grad", "attention", "attention_grad", "own_attention",
                   "bias_grad"})  # what a pass can capture (`method.INPUTS` maps each input to some of these)
FROM_INPUT = frozenset({"input_grad", "guided_grad", "attention_grad", "bias_grad"})  # these need the whole graph


def capture(
    model: nn.Module,
    x: torch.Tensor,
    target: Target | TargetSpec,
    needs: frozenset[str] = frozenset(),
    layer: nn.Module | None = None,
    probes: Sequence[tuple[str, nn.Module]] = (),
    biased: Sequence[nn.Module] = (),
    differentiable: bool = False,
    output: OutputSpec = None,
) -> tuple[Capture, Target]:
    """One forward pass and the backward passes `needs` asks for; the target resolved from this very pass.

    `needs` (a subset of `NEEDS`): "layer" records `layer`'s output, "layer_grad" its gradient;
    "input_grad" d score / d x; "guided_grad" the same with guided ReLUs, from a second backward over the
    same graph, so Grad-CAM, saliency, Guided Backprop and gradient-weighted rollout asked together cost
    one forward; "attention" records each of `probes` ((name, module) pairs that run once or, an unused
    tower's, not at all; the outputs of those that ran, in the order they ran), "attention_grad" their
    gradients; "own_attention" runs `model(x, return_attention=True)` and keeps the model's own maps;
    "bias_grad" the gradients of the outputs of `biased` (layers with a bias, FullGrad's terms) from the
    same backward. `target` may be unresolved (None, int, tensor, callable). `differentiable`: nothing is
    detached and the gradients keep their graph (create_graph), so maps built from them can be trained
    through. `output` selects what the targets score from the model's output (`select_output`).
    """
    if unknown := sorted(set(needs) - NEEDS):
        raise ValueError(f"capture: unknown needs {unknown}; known: {sorted(NEEDS)}")
    from_input = bool(needs & FROM_INPUT)  # the graph from the input, not from the chosen layer
    x = x.detach().requires_grad_(from_input)
    switch = Switch()
    keep = (lambda t: t) if differentiable else (lambda t: t.detach())
    recorded = _Recorded(layer if "layer" in needs else None, probes if "attention" in needs else (),
                         biased if "bias_grad" in needs else ())
    with ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(bool(needs & {"layer_grad"}) or from_input or differentiable))
        recorded.hook(stack, leaf=not (from_input or differentiable))
        if "guided_grad" in needs:
            stack.enter_context(rewritten(model, "guided-relu", switch=switch))
        attention: dict[str, torch.Tensor] = {}
        forward = _keeping_attention(model, attention) if "own_attention" in needs else model
        nhwc = not differentiable and nhwc_pass(model, x)  # NHWC where faster; x's gradient keeps x's layout
        raw = run_model(forward, as_nhwc(x) if nhwc else x.clone())  # a model that edits its input edits a copy
        logits = logits_of(select_output(raw, output), x.shape[0])
        recorded.check(model)
        if isinstance(target, Target):
            table, k = target.classes, None
        else:
            target, table, k = resolve(target, logits)
        scores = target.score(logits if k is None else _per_row(logits, k))  # (B·K,)
        grads = _backward(scores.view(x.shape[0], k or 1), x, recorded, needs, switch, differentiable)
    return (
        Capture(
            logits=keep(logits) if isinstance(logits, torch.Tensor) else logits,
            scores=keep(scores), table=table, per_image=k,
            activations=keep(recorded.layer[0]) if recorded.layer else None,
            probes=tuple(keep(out) for out in recorded.outputs), probe_names=recorded.names,
            own_attention={k: keep(v) for k, v in attention.items()} if "own_attention" in needs else None,
            **grads,
        ),
        target,
    )


class _Recorded:
    """What one pass records: the chosen layer's output, the probes' outputs (attention) and the biased layers'."""

    def __init__(self, layer: nn.Module | None, probes: Sequence[tuple[str, nn.Module]],
                 biased: Sequence[nn.Module]) -> None:
        self.module, self.probes, self.biased = layer, list(probes), list(biased)
        self.layer: list[torch.Tensor] = []
        self.seen: list[tuple[int, torch.Tensor]] = []
        self.bias_seen: list[tuple[int, torch.Tensor]] = []

    def hook(self, stack: ExitStack, leaf: bool) -> None:
        if self.module is not None:
            stack.enter_context(recording(self.module, self.layer, leaf=leaf))
        if self.probes:
            stack.enter_context(recording_each([module for _, module in self.probes], self.seen))
        if self.biased:
            stack.enter_context(recording_each(self.biased, self.bias_seen))

    def check(self, model: nn.Module) -> None:
        if self.module is not None and len(self.layer) != 1:
            ran = "did not run" if not self.layer else f"ran {len(self.layer)} times"
            name = next((n for n, m in model.named_modules() if m is self.module), "?")
            raise InputError(f"the chosen layer {name!r} {ran} in the forward pass; choose a layer that runs once")
        _check_ran_once([name for name, _ in self.probes], [i for i, _ in self.seen], may_skip=True)
        _check_ran_once([f"bias layer {i}" for i in range(len(self.biased))], [i for i, _ in self.bias_seen])

    @property
    def outputs(self) -> list[torch.Tensor]:
        return [out for _, out in self.seen]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.probes[i][0] for i, _ in self.seen)

    @property
    def bias_outputs(self) -> list[torch.Tensor]:
        return [out for _, out in sorted(self.bias_seen, key=lambda pair: pair[0])]  # module order


def _backward(per_image: torch.Tensor, x: torch.Tensor, recorded: _Recorded, needs: frozenset[str], switch: Switch,
              differentiable: bool) -> dict[str, object]:
    """The gradients `needs` asks for of the scores (B, K), as `Capture` fields: one backward for the plain ones,
    a second over the same graph with the ReLUs switched to the guided rule for "guided_grad"."""
    layer_grad, input_grad, guided = "layer_grad" in needs, "input_grad" in needs, "guided_grad" in needs
    probe_grad = "attention_grad" in needs
    outputs = recorded.outputs
    wrt = (recorded.layer[:1] if layer_grad else []) + ([x] if input_grad else []) \
        + (outputs if probe_grad else []) + recorded.bias_outputs
    grads = row_grads(per_image, wrt, retain=guided, create_graph=differentiable)
    out: dict[str, object] = {
        "gradients": grads.pop(0) if layer_grad else None,
        "input_grad": grads.pop(0) if input_grad else None,
        "probe_grads": tuple(grads[: len(outputs)]) if probe_grad else (),
        "bias_grads": tuple(grads[len(outputs) if probe_grad else 0 :]),
    }
    if guided:
        switch.on = True
        out["guided_grad"] = row_grads(per_image, [x], retain=False, create_graph=differentiable, batched=False)[0]
    return out


def _keeping_attention(model: nn.Module, into: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` as a function of x giving logits, that puts the maps of forward(x, return_attention=True) in `into`."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x, return_attention=True)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise InputError(f"forward(x, return_attention=True) must return (logits, maps), got {type(out).__name__}")
        logits, attention = out
        into.update(_attention_maps(attention, x.shape[0]))
        return logits

    return forward


def _attention_maps(attention: object, batch: int) -> dict[str, torch.Tensor]:
    """A model's own maps — a tensor, a list of them or a dict of them — as {name: (B, h, w)}."""
    if isinstance(attention, torch.Tensor):
        items = {"attention": attention}
    elif isinstance(attention, dict):
        items = dict(attention)
    elif isinstance(attention, (list, tuple)):
        items = {str(i): a for i, a in enumerate(attention)}
    else:
        raise InputError(f"the model's own attention must be a tensor, list or dict, got {type(attention).__name__}")
    out = {}
    for name, a in items.items():
        if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[1] == 1:
            a = a[:, 0]
        if not isinstance(a, torch.Tensor) or a.dim() != 3 or a.shape[0] != batch:
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise InputError(f"the model's own attention {name!r} must be (B, h, w) or (B, 1, h, w), got {shape}")
        out[str(name)] = a
    return out


def _check_ran_once(names: list[str], ran: list[int], may_skip: bool = False) -> None:
    """Each module ran once (`may_skip`: or not at all — an attention layer of a tower the call does not use)."""
    for i, name in enumerate(names):
        count = ran.count(i)
        if count != 1 and not (may_skip and count == 0):
            times = "did not run" if count == 0 else f"ran {count} times"
            raise InputError(f"{name!r} {times} in the forward pass; a recorded module must run once")


def row_grads(scores: torch.Tensor, wrt: list[torch.Tensor], retain: bool, create_graph: bool = False,
              batched: bool = True) -> list[torch.Tensor]:
    """d scores[b, k] / d each of `wrt` (B, ...), per row (B·K, ...) image-major; zeros where there is no path.

    K = 1: one backward of Σ_b scores[b]. K > 1: one batched backward (vmap over K one-hot output
    gradients) when `batched` and nothing needs a second-order graph; else K backward passes.
    """
    if not wrt:
        return []
    b, k = scores.shape
    if not scores.requires_grad:
        return [torch.zeros_like(t).repeat_interleave(k, 0) for t in wrt]
    if not all(t.requires_grad for t in wrt):  # no path from these (a decoder's object queries): zeros
        live = iter(row_grads(scores, [t for t in wrt if t.requires_grad], retain, create_graph, batched))
        return [next(live) if t.requires_grad else torch.zeros_like(t).repeat_interleave(k, 0) for t in wrt]
    if k == 1:
        return _grad(scores.sum(), wrt, retain or create_graph, create_graph)
    if batched and not create_graph:
        onehot = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None].expand(k, b, k)  # (K, B, K)
        try:
            grads = torch.autograd.grad(scores, wrt, onehot, retain_graph=retain, allow_unused=True,
                                        is_grads_batched=True)
        except RuntimeError as e:  # an op without a batching rule: the K passes below give the same gradients
            if "vmap" not in str(e) and "atching" not in str(e):
                raise
        else:
            return [_rows(torch.zeros((k, *t.shape), dtype=t.dtype, device=t.device) if g is None else g)
                    for g, t in zip(grads, wrt, strict=True)]
    per_target = [_grad(scores[:, j].sum(), wrt, retain or create_graph or j < k - 1, create_graph)
                  for j in range(k)]
    return [_rows(torch.stack(gs)) for gs in zip(*per_target, strict=True)]


def _per_row(output: object, k: int) -> object:
    """A per-image output (B, ...) repeated for the K rows of each image (a list: each item K times)."""
    if isinstance(output, torch.Tensor):
        return output.repeat_interleave(k, 0)
    return [item for item in output for _ in range(k)]


def _rows(per_target: torch.Tensor) -> torch.Tensor:
    """(K, B, ...) → (B·K, ...) image-major."""
    return per_target.transpose(0, 1).flatten(0, 1)


def _grad(total: torch.Tensor, wrt: list[torch.Tensor], retain: bool, create_graph: bool) -> list[torch.Tensor]:
    grads = torch.autograd.grad(total, wrt, retain_graph=retain, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True)]
