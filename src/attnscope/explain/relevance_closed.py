"""zennit's commonest LRP rules in closed form: the same relevance as their terms, in a few tensor passes.

`explain.relevance` evaluates any zennit `BasicHook` term by term: each term's input modifier, a forward with
its parameters, the gradient mapper (the relevance over zennit's stabilised sum of the terms' outputs), one
transposed map per term, the reducer. For the rules that carry most of LRP's cost on a ReLU network (z⁺ and
flat in the default `EpsilonPlusFlat`, α β and γ in the other composites, the Norm of the residual sums), that
general evaluation spends as much CPU on whole-tensor elementwise passes (modifiers, a zero term's zeros, the
stabiliser's six passes, the reducer's products and sums) as on the convolutions. Written out, with R the
relevance of the layer's output and ε the stabiliser (zennit's `stabilize`: z + ε·sign(z), sign(0) = +1):

- **z⁺** (`ZPlus`; Montavon et al., Pattern Recognition 2017) on an input x ≥ 0: the negative part of x is
  zero and the negative weights' term has no bias, so it adds nothing; R_in = x ⊙ W⁺ᵀ(R / (W⁺x + b⁺ + ε)).
- **α β** (`AlphaBeta`; Bach et al., PLoS ONE 2015) on x ≥ 0: R_in = α x ⊙ W⁺ᵀ(R / (W⁺x + b⁺ + ε)) −
  β x ⊙ W⁻ᵀ(R / (W⁻x + b⁻ ∓ ε)).
- **γ** (`Gamma`, zennit's generalised form; Montavon et al. 2019) on x ≥ 0: where the layer's output is positive,
  R through W + γW⁺ over (W + γW⁺)x + b + γb⁺; where it is negative, through W + γW⁻ over its own sum.
- **flat** (`Flat`; Lapuschkin et al., Nat. Commun. 2019): weights and input all ones, so the denominator is
  the same for every image: computed on one row, R_in = 1ᵀ(R / (1 * 1 + ε)).
- **Norm on a sum** (`Norm` on zennit's `Sum` layer, the residual additions its canonizers make explicit):
  R_in = x ⊙ (R / (Σ x + ε)) broadcast over the summed axis, written so that each summand's relevance is laid
  out as R is (zennit's layout leaves every branch a strided slice, which the next convolution copies).

Each applies only to the exact zennit class with its own gradient mapper and reducer and a plain `Stabilizer`,
and z⁺, α β and γ only while their input is finite and ≥ 0; anything else returns None and the layer is
evaluated term by term. The values are the term-by-term evaluation's: the same operations on the same numbers,
less additions of zeros (tests/test_lrp_closed.py: bit for bit on a ResNet-18 under each composite in NCHW; in
an NHWC pass the two evaluations hand the transposed convolutions relevances in different layouts, which round
differently: ≤ 1e-6 relative, 2.4e-7 on resnet18 at 224 px, bench/lrp_closed.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn

# (x, y, relevance) → the relevance of the layer's input, or None when the closed form does not apply to x
Closed = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor | None]
Op = tuple[Callable, Callable]  # (forward with given parameters, input gradient), as `relevance._conv_op`


def nhwc(t: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out NHWC (and not also NCHW, as a tensor of one channel or pixel is)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's `stabilize(z, ε)` without clipping or norm scaling, z + ε·sign(z) with sign(0) = sign(-0) = +1,
    as one select: the same numbers (z − ε is z + (−ε) in IEEE arithmetic; NaN stays NaN)."""
    return torch.where(z < 0, z - epsilon, z + epsilon)


@cache
def _own_code(name: str) -> tuple[Any, Any]:
    """The code of zennit's gradient mapper and reducer of rule class `name` (a default instance's)."""
    from zennit import rules

    hook = getattr(rules, name)()
    return hook.gradient_mapper.__code__, hook.reducer.__code__


def _epsilon(hook: Any, name: str) -> float | None:
    """ε of `hook` when it is zennit's rule class `name` as zennit defines it — its own gradient mapper and
    reducer, over a plain `Stabilizer` (no clip, no norm scaling) — else None."""
    from zennit import rules
    from zennit.core import Stabilizer

    if type(hook) is not getattr(rules, name):
        return None
    mapper, reducer = getattr(hook.gradient_mapper, "__code__", None), getattr(hook.reducer, "__code__", None)
    if (mapper, reducer) != _own_code(name):
        return None
    found = [cell.cell_contents for cell in hook.gradient_mapper.__closure__ or ()
             if type(cell.cell_contents) is Stabilizer]
    if len(found) != 1 or found[0].clip or found[0].norm_scale:
        return None
    return float(found[0].epsilon)


def _no_bias(term: Any) -> bool:
    """Whether a term adds no bias (zennit zeroes it on the terms of an input's negative part)."""
    bias = term.params.get("bias")
    return bias is None or not bool(bias.any())


def _finite_nonnegative(x: torch.Tensor) -> bool:
    low, high = torch.aminmax(x)
    return bool(low >= 0) and bool(high.isfinite())


def _denominator(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """`stabilized(z, ε)`, written into z where z ≥ 0 (W⁺x + b⁺ on x ≥ 0, checked: kernels transform)."""
    return z.add_(epsilon) if bool(z.min() >= 0) else stabilized(z, epsilon)


def _zplus(epsilon: float, op: Op, terms: list) -> Closed | None:
    positive, negative = terms
    if not _no_bias(negative):
        return None  # zennit zeroes the negative term's bias; a changed rule is evaluated term by term
    forward, grad = op

    def closed(x: torch.Tensor, _y: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor | None:
        if not _finite_nonnegative(x):
            return None
        denominator = _denominator(forward(x, positive.params), epsilon)
        quotient = torch.div(relevance, denominator, out=denominator)
        return grad(x, positive.params, quotient).mul_(x)

    return closed


def _alpha_beta(epsilon: float, alpha: float, beta: float, op: Op, terms: list) -> Closed | None:
    """α·x⁺ ⊙ W⁺ᵀ(R / (W⁺x⁺ + b⁺)) − β·x⁺ ⊙ W⁻ᵀ(R / (W⁻x⁺ + b⁻)) on x ≥ 0 (the x⁻ terms vanish)."""
    positive, _, negative, _ = terms
    if not (_no_bias(terms[1]) and _no_bias(terms[3])):
        return None
    forward, grad = op

    def closed(x: torch.Tensor, _y: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor | None:
        if not _finite_nonnegative(x):
            return None
        up = relevance / _denominator(forward(x, positive.params), epsilon)
        down = relevance / stabilized(forward(x, negative.params), epsilon)
        return alpha * (x * grad(x, positive.params, up)) - beta * (x * grad(x, negative.params, down))

    return closed


def _gamma(epsilon: float, op: Op, terms: list) -> Closed | None:
    """Generalised γ on x ≥ 0: where the layer's output z > 0, R / ((W + γW⁺)x + b + γb⁺) through W + γW⁺; where
    z < 0, R / ((W + γW⁻)x + b + γb⁻) through W + γW⁻ (the x⁻ terms vanish)."""
    up_term, _, down_term, _, _ = terms
    if not (_no_bias(terms[1]) and _no_bias(terms[3])):
        return None
    forward, grad = op

    def closed(x: torch.Tensor, y: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor | None:
        if y is None or not _finite_nonnegative(x):
            return None
        up = (y > 0.0) * relevance / stabilized(forward(x, up_term.params), epsilon)
        down = (y < 0.0) * relevance / stabilized(forward(x, down_term.params), epsilon)
        return x * grad(x, up_term.params, up) + x * grad(x, down_term.params, down)

    return closed


def _flat(epsilon: float, op: Op, terms: list) -> Closed:
    (term,) = terms
    forward, grad = op

    def closed(x: torch.Tensor, _y: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor:
        ones = term.inputs(x[:1])  # zennit's flat input: ones, the same for every row
        return grad(x, term.params, relevance / stabilized(forward(ones, term.params), epsilon))

    return closed


def _sum_norm(epsilon: float, dim: int) -> Closed:
    def closed(x: torch.Tensor, y: torch.Tensor | None, relevance: torch.Tensor) -> torch.Tensor | None:
        if y is None:
            return None
        axis = dim % x.dim()
        quotient = relevance / stabilized(y, epsilon)
        count = x.shape[axis]
        # in NHWC: (count·N, C, H, W) laid out NHWC, each summand's (N, C, H, W) a block of it
        layout = torch.channels_last if nhwc(quotient) else torch.contiguous_format
        parts = torch.empty((count * quotient.shape[0], *quotient.shape[1:]), dtype=quotient.dtype,
                            device=quotient.device, memory_format=layout).view(count, *quotient.shape)
        for k in range(count):
            torch.mul(x.select(axis, k), quotient, out=parts[k])
        return parts.movedim(0, axis)

    return closed


def closed_form(module: nn.Module, hook: Any, terms: list, op: Op | None) -> Closed | None:
    """The closed form of zennit rule `hook` on `module` (its parameter-modified `terms`, `op` as
    `relevance._conv_op`), or None where the layer is evaluated term by term."""
    if op is not None and (epsilon := _epsilon(hook, "ZPlus")) is not None and len(terms) == 2:
        return _zplus(epsilon, op, terms)
    if op is not None and (epsilon := _epsilon(hook, "Flat")) is not None and len(terms) == 1:
        return _flat(epsilon, op, terms)
    if op is not None and (epsilon := _epsilon(hook, "AlphaBeta")) is not None and len(terms) == 4:
        weights = inspect.getclosurevars(hook.reducer).nonlocals
        return _alpha_beta(epsilon, float(weights["alpha"]), float(weights["beta"]), op, terms)
    if op is not None and (epsilon := _epsilon(hook, "Gamma")) is not None and len(terms) == 5:
        return _gamma(epsilon, op, terms)
    from zennit.layer import Sum

    if type(module) is Sum and (epsilon := _epsilon(hook, "Norm")) is not None:
        return _sum_norm(epsilon, module.dim)
    return None
