"""zennit's LRP rules evaluated in the backward pass from the tensors the forward saved: no layer runs twice.

zennit (Anders et al., 2021) places a rule on each layer with a composite and applies it as module hooks:
in the backward, each rule runs its layer's forward again on the stored input once per term of the rule
(z⁺: twice — the positive part of the input with the positive weights and the negative part with the
negative weights), differentiates those re-runs, and discards the layer's own backward, which autograd
computed anyway. `register` places the *same* rules (zennit's composite decides which rule goes where, its
canonizers merge BatchNorm and make residual sums explicit, and each rule's own modifiers, gradient mapper and
reducer define the relevance) but evaluates every `zennit.core.BasicHook` once, in the layer's slot of the
backward, from its input and output saved by the forward:

- a term whose input and parameters are the layer's own (LRP-ε, the Norm rule of pooling and sums) reads the
  forward's output instead of re-running the layer;
- a term whose input is zero everywhere (z⁺'s negative part behind a ReLU) is its bias alone, and adds nothing
  to the relevance (its input is the factor of the reducer); a term whose input is the same for every row (the
  flat rule's ones) runs on one row;
- the rest run their convolution or linear map once, and the gradient of every term is the transposed map
  (`convolution_backward` for the input only, or a product with the weight), never a re-run under autograd;
- layers with the `Pass` rule hand the relevance down unchanged; the layer's own backward never runs;
- z⁺, α β and γ on a non-negative input, the flat rule and the Norm rule of a sum are evaluated in closed form
  (`explain.relevance_closed`: the same numbers in a few tensor passes).

Any other rule (zennit's ReLU hooks) and any layer this cannot evaluate (several tensor inputs, a padding mode
other than zeros) keep zennit's own hook. The relevance equals zennit's to float rounding
(tests/test_explain_attributions.py pins ≤ 1e-6 on every composite).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.explain import relevance_closed

Undo = Callable[[], None]


def _returned(ctx, y: torch.Tensor, own: bool) -> torch.Tensor:
    """The layer's (detached) output as the Function's own output, so later in-place operations on it (a residual
    `out += identity`) stay legal: declared as written in place (no copy) unless the layer's graph still reads it."""
    if not own:
        return y.clone()
    ctx.mark_dirty(y)
    return y


class _Rule(torch.autograd.Function):
    """Forward: the layer's output; backward: the relevance of its input from the saved input and output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, rule: _Evaluated, graph: torch.Tensor | None):
        ctx.rule, ctx.graph = rule, graph  # `graph`: the layer's own output with its graph, for generic layers
        ctx.save_for_backward(x, y if rule.reads_output else None)  # a later in-place edit of y then raises
        return _returned(ctx, y, graph is None)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        x, y = ctx.saved_tensors
        return ctx.rule(x, y, relevance, ctx.graph), None, None, None


class _Pass(torch.autograd.Function):
    """Forward: the layer's output; backward: the relevance handed to the input unchanged (zennit's `Pass`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor):
        return _returned(ctx, y, True)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return relevance, None


@dataclass
class _Term:
    """One term of a rule: its input modifier, its (modified) parameters and whether they are the layer's own."""

    inputs: Callable[[torch.Tensor], torch.Tensor]
    params: dict[str, torch.Tensor]
    own: bool
    outputs: Callable[[torch.Tensor], torch.Tensor]


def _terms(module: nn.Module, hook: Any) -> list[_Term]:
    """The terms of a zennit `BasicHook` on `module`, its parameter modifiers applied once (as `ParamMod` would)."""
    from zennit.core import ParamMod, zero_wrap

    terms = []
    for in_mod, param_mod, out_mod in zip(hook.input_modifiers, hook.param_modifiers, hook.output_modifiers,
                                          strict=True):
        mod = ParamMod.ensure(param_mod)
        keys = mod.param_keys or [name for name, _ in module.named_parameters(recurse=False)]
        missing = [k for k in keys if not hasattr(module, k)]
        if mod.require_params and missing:
            raise RuntimeError(f"Module {module} requires missing parameters: {missing}")
        modify = zero_wrap(mod.zero_params or [])(mod.modifier)
        own, params = True, {}
        for key in (k for k in keys if k not in missing and getattr(module, k) is not None):
            param = getattr(module, key).detach()
            params[key] = modify(param, key)
            own = own and params[key].data_ptr() == param.data_ptr() and params[key].shape == param.shape
        terms.append(_Term(in_mod, params, own, out_mod))
    return terms


def _conv_op(module: nn.Module) -> tuple[Callable, Callable] | None:
    """(forward with given parameters, input gradient) of a plain convolution or linear layer (the class's own
    forward, not a subclass's), else None."""
    if type(module).forward not in (nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward):
        return None  # a subclass with its own forward (timm's Conv2dSame pads first): evaluated generically
    if isinstance(module, nn.Linear):
        return (lambda x, p: F.linear(x, p["weight"], p.get("bias")),
                lambda x, p, g: g.matmul(p["weight"]))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        def grad(x: torch.Tensor, p: dict[str, torch.Tensor], g: torch.Tensor) -> torch.Tensor:
            # the input's values are not read, only its shape and layout: the layout of g, so oneDNN copies neither
            # (an NHWC g against a strideless stand-in went through an NCHW copy: 0.32 vs 0.14 s on resnet18's conv1)
            shape = g.new_empty(1).expand(x.shape) if not relevance_closed.nhwc(g) else \
                torch.empty(x.shape, dtype=g.dtype, device=g.device, memory_format=torch.channels_last)
            return torch.ops.aten.convolution_backward(
                g, shape, p["weight"], None, module.stride, module.padding, module.dilation, False,
                [0] * len(module.stride), module.groups, [True, False, False])[0]

        return (lambda x, p: module._conv_forward(x, p["weight"], p.get("bias")), grad)
    return None


class _Evaluated:
    """A zennit `BasicHook`'s relevance for one layer, computed from the layer's saved input x and output y."""

    def __init__(self, module: nn.Module, hook: Any) -> None:
        self.module, self.hook = module, hook
        self.terms = _terms(module, hook)
        self.op = _conv_op(module)
        self.reads_output = self.op is None or any(t.own for t in self.terms)  # a term that is the layer itself
        self.closed = relevance_closed.closed_form(module, hook, self.terms, self.op)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, relevance: torch.Tensor,
                 graph: torch.Tensor | None) -> torch.Tensor:
        if self.closed is not None and (done := self.closed(x, y, relevance)) is not None:
            return done
        if self.op is None:
            return self._generic(x, y, relevance, graph)
        forward, grad = self.op
        inputs, outputs, zero = [], [], []
        for term in self.terms:
            xi = term.inputs(x)
            empty = xi is not x and not bool(xi.any())
            if xi is x and term.own:
                out = y  # the forward's own output: no re-run
            elif empty or (xi is not x and bool((xi == xi[:1]).all())):  # zeros (the bias alone), ones (flat)
                out = forward(xi[:1], term.params).expand_as(relevance)  # the same input for every row: once
            else:
                out = forward(xi, term.params)
            inputs.append(xi)
            outputs.append(term.outputs(out))
            zero.append(empty)
        mapped = _listed(self.hook.gradient_mapper(relevance, outputs))
        gradients = [torch.zeros_like(xi) if empty else grad(xi, term.params, g)
                     for xi, term, g, empty in zip(inputs, self.terms, mapped, zero, strict=True)]
        return self.hook.reducer(inputs, gradients)

    def _generic(self, x: torch.Tensor, y: torch.Tensor, relevance: torch.Tensor,
                 graph: torch.Tensor | None) -> torch.Tensor:
        """zennit's own evaluation (re-run under autograd), except a term that is the layer itself: its output and
        gradient come from the forward's own graph (pooling, sums)."""
        from zennit.core import ParamMod

        if len(self.terms) == 1 and self.terms[0].own and self.terms[0].inputs(x) is x and graph is not None:
            mapped = _listed(self.hook.gradient_mapper(relevance, [self.terms[0].outputs(y)]))
            (gradient,) = torch.autograd.grad(graph, x, mapped[0])
            return self.hook.reducer([x], [gradient])
        inputs, outputs = [], []
        for term, param_mod in zip(self.terms, self.hook.param_modifiers, strict=True):
            xi = term.inputs(x.detach().clone()).requires_grad_()
            with ParamMod.ensure(param_mod)(self.module) as modified, torch.enable_grad():
                outputs.append(term.outputs(modified.forward(xi)))
            inputs.append(xi)
        gradients = torch.autograd.grad(outputs, inputs, self.hook.gradient_mapper(relevance, outputs))
        return self.hook.reducer(inputs, gradients)


def _listed(mapped: torch.Tensor | list | tuple) -> list[torch.Tensor]:
    """A gradient mapper's result as a list (zennit's one-term rules return the tensor itself)."""
    return [mapped] if isinstance(mapped, torch.Tensor) else list(mapped)


def _placed(module: nn.Module, rule: Any) -> Undo:
    """Hooks that evaluate `rule` on `module` from saved tensors (or zennit's own hook where they cannot)."""
    from zennit.core import BasicHook
    from zennit.rules import Pass

    if isinstance(rule, Pass):
        inplace = getattr(module, "inplace", False)
        if inplace:
            module.inplace = False  # the input must survive the layer: the relevance is handed to it

        def passing(_m: nn.Module, inputs: tuple, output: Any) -> Any:
            if len(inputs) == 1 and isinstance(output, torch.Tensor) and inputs[0].requires_grad \
                    and output.shape == inputs[0].shape:
                return _Pass.apply(inputs[0], output.detach())
            return None

        handle = module.register_forward_hook(passing)
        return lambda: (handle.remove(), setattr(module, "inplace", inplace) if inplace else None)
    if not isinstance(rule, BasicHook):
        return rule.register(module).remove
    evaluated = _Evaluated(module, rule)

    def evaluate(_m: nn.Module, inputs: tuple, output: Any) -> Any:
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        if len(tensors) != 1 or not isinstance(output, torch.Tensor) or not tensors[0].requires_grad:
            return None
        graph = output if evaluated.op is None else None
        return _Rule.apply(tensors[0], output.detach(), evaluated, graph)

    handle = module.register_forward_hook(evaluate)
    return handle.remove


def register(model: nn.Module, composite: Any) -> Undo:
    """Apply `composite`'s canonizers to `model` and place its rules (evaluated from saved tensors); returns
    the undo (hooks removed, canonizers reverted, in reverse order)."""
    undo: list[Undo] = []
    try:
        for canonizer in composite.canonizers:
            undo += [handle.remove for handle in canonizer.apply(model)]
        ctx: dict = {}
        for name, child in model.named_modules():
            template = composite.module_map(ctx, name, child)
            if template is not None:
                undo.append(_placed(child, template.copy()))
    except BaseException:
        for restore in reversed(undo):
            restore()
        raise
    return lambda: [restore() for restore in reversed(undo)]
