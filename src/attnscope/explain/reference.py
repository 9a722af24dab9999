"""Attributions relative to reference inputs: DeepLIFT (Rescale rule), DeepLIFT-SHAP and GradientSHAP.

DeepLIFT (Shrikumar et al., ICML 2017) explains y(x) − y(x') by multipliers m = Δout / Δin that replace
each nonlinearity's derivative. Here that is the registered rewrite `deeplift-rescale`: the references run
once per call without gradients while every elementwise activation module records its input and output
(`recorded`; one image for a constant baseline, shared by all images, targets and methods of the call), then
the inputs run alone with a hook on each such module that swaps its backward for the multiplier against the
recorded reference, and one backward gives m_x; the attribution is (x − x') ⊙ m_x. Max pooling keeps its
gradient (the paper's choice for max operations; captum applies its own rule to MaxPool, see docs/methods.md).
DeepLIFT-SHAP averages DeepLIFT over a set of references; GradientSHAP (Lundberg & Lee, NeurIPS 2017; captum's
estimator) averages (x̃ − b) ⊙ ∇y(b + α (x̃ − b)) over random references b, α ~ U(0, 1) and noisy inputs x̃.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain import budget
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.explain.rewrites import register_rewrite, rewritten
from attnscope.explain.sampled import MAX_POINTS, gradient_probe

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU, nn.SiLU)
RESCALE_EPS = 1e-10  # |Δin| below this: the activation's own derivative (captum's threshold)


class _Rescaled(torch.autograd.Function):
    """Forward: the activation's output; backward: grad · m where |Δin| ≥ eps, else the activation's own backward."""

    @staticmethod
    def forward(ctx, inp: torch.Tensor, out: torch.Tensor, multiplier: torch.Tensor, near: torch.Tensor):
        ctx.save_for_backward(multiplier, near)
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        multiplier, near = ctx.saved_tensors
        return torch.where(near, 0.0, grad * multiplier), torch.where(near, grad, 0.0), None, None


@dataclass
class Recorded:
    """Every activation module's (input, output) on the references, in call order (a module may run twice);
    `done` once they are all recorded (then the rewrite rescales instead of recording)."""

    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    done: bool = False


@register_rewrite("deeplift-rescale", applies=lambda m: isinstance(m, ELEMENTWISE))
def _rescale(name: str, module: nn.Module, reference: Recorded,
             index: torch.Tensor | None = None) -> tuple[None, Callable[[], None]]:
    """DeepLIFT's Rescale rule on one activation module: while `reference` is not done, its (input, output) on
    the references are recorded; then, for the inputs, its backward is the multiplier Δout / Δin against them
    (reference row `index[i]` for input i; None: the one reference for every input)."""
    seen: list[torch.Tensor] = []
    calls = reference.calls.setdefault(name, [])
    count = [0]

    def before(_module: nn.Module, inputs):
        seen[:] = [inputs[0]]
        return (inputs[0].clone(), *inputs[1:])  # an in-place activation then leaves the input intact

    def after(_module: nn.Module, _inputs, output):
        if not reference.done:
            calls.append((seen[0].detach(), output.detach()))
            return None
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            return None
        ref_in, ref_out = calls[count[0] % len(calls)]
        count[0] += 1
        if index is not None:
            ref_in, ref_out = ref_in[index], ref_out[index]
        delta_in, delta_out = (seen[0] - ref_in).detach(), (output - ref_out).detach()
        near = delta_in.abs() < RESCALE_EPS
        multiplier = torch.where(near, 0.0, delta_out / torch.where(near, 1.0, delta_in))
        return _Rescaled.apply(seen[0], output, multiplier, near)

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return None, lambda: [h.remove() for h in handles]


def _has_activation(model: nn.Module) -> str | None:
    if any(isinstance(m, ELEMENTWISE) for m in model.modules()):
        return None
    return "DeepLIFT rewrites activation modules (nn.ReLU, nn.Sigmoid, ...) and this model has none"


_REFERENCES: dict[int, dict[tuple, Recorded]] = {}  # id(a call's target) → the references recorded in that call


def _of_call(oracle: Oracle) -> dict[tuple, Recorded]:
    """The references recorded in this call (its methods share the call's `Target`), dropped when the call ends."""
    key = id(oracle.target)
    if key not in _REFERENCES:
        _REFERENCES[key] = {}
        weakref.finalize(oracle.target, _REFERENCES.pop, key, None)
    return _REFERENCES[key]


def recorded(oracle: Oracle, references: torch.Tensor, key: tuple) -> Recorded:
    """The activations of `references` (R, C, H, W): one forward without gradients (in budget chunks), shared by
    every method and target of the call that uses the same references (`key`)."""
    known = _of_call(oracle)
    if key not in known:
        known[key] = record(oracle, references)
    return known[key]


def record(oracle: Oracle, references: torch.Tensor) -> Recorded:
    """The activations of `references` (R, C, H, W) from forwards without gradients in budget chunks (not kept
    for the call: `recorded` keeps them)."""
    step, parts = oracle.chunk(None, references.shape[0]), []
    for s in range(0, references.shape[0], step):
        parts.append(Recorded())
        with rewritten(oracle.core, "deeplift-rescale", reference=parts[-1]):
            oracle.logits(references[s : s + step], channels_last=False)
    return Recorded({name: [tuple(torch.cat(t) for t in zip(*(p.calls[name][j] for p in parts), strict=True))
                            for j in range(len(calls))]
                     for name, calls in parts[0].calls.items()}, done=True)


def deeplift_attributions(oracle: Oracle, images: torch.Tensor, reference: Recorded, baselines: torch.Tensor,
                          index: torch.Tensor | None, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(x − x') ⊙ m_x (M, C, H, W) for inputs `images` (M, ...) against the recorded references (reference row
    `index[i]` for input i, or the one reference), input i explained for `rows[i]`; `baselines`: x' per input.

    Each chunk of `batch_size` inputs is one forward of the inputs alone (the references ran once, without
    gradients, `recorded`) and one backward.
    """
    out = torch.empty_like(images)
    for s in range(0, images.shape[0], batch_size):
        x, r = images[s : s + batch_size], rows[s : s + batch_size]
        grads = oracle.input_gradients(x, r, rewrite="deeplift-rescale", reference=reference,
                                       index=None if index is None else index[s : s + batch_size])
        out[s : s + batch_size] = (x - baselines[s : s + batch_size]) * grads
    return out


def reference_set(references: float | torch.Tensor | str, images: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """References (N, M, C, H, W) per row: a number (M = 1), a tensor (M, C, H, W) or (C, H, W) shared by
    every image, or "uniform": `count` images of uniform noise in each image's [min, max] (from `seed`)."""
    n, shape = images.shape[0], images.shape[1:]
    if isinstance(references, str):
        if references != "uniform":
            raise InputError(f"references must be a number, a tensor (M, C, H, W) or 'uniform', got {references!r}")
        positive_int("n_references", count, at_most=MAX_POINTS)
        u = torch.rand((count, *shape), generator=torch.Generator().manual_seed(seed)).to(images)  # (M, C, H, W)
        lo, hi = images.amin(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))  # (N,)
        return lo.view(n, 1, 1, 1, 1) + (hi - lo).view(n, 1, 1, 1, 1) * u[None]
    if isinstance(references, (int, float)) and not isinstance(references, bool):
        return torch.full((n, 1, *shape), float(references), dtype=images.dtype, device=images.device)
    if isinstance(references, torch.Tensor):
        ref = references.to(images)
        ref = ref[None] if ref.dim() == 3 else ref
        if ref.dim() == 4 and tuple(ref.shape[1:]) == tuple(shape):
            return ref[None].expand(n, *ref.shape)
    got = tuple(references.shape) if isinstance(references, torch.Tensor) else type(references).__name__
    raise InputError(f"references {got} do not fit images {tuple(images.shape)}: pass a number, a tensor "
                     f"(M, {', '.join(map(str, shape))}) or 'uniform'")


def _reference_key(references: float | torch.Tensor | str, *more: object) -> tuple:
    """What identifies a set of references within a call (a tensor by its identity: the caller's own object)."""
    return (id(references) if isinstance(references, torch.Tensor) else references, *more)


@register_method("deeplift", "gradient", applies=_has_activation)
def deeplift(images: torch.Tensor, oracle: Oracle, *, baseline: float | torch.Tensor = 0.0, reduce: str = "sum",
             batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT, Rescale rule (Shrikumar et al., ICML 2017): (x − x') ⊙ m, m the multipliers Δy / Δx through
    activations rescaled by Δout / Δin; Σ attributions = y(x) − y(x') on nets of linear layers and such activations.

    The baseline's forward runs once per call (one image for a number or one (C, H, W) tensor), shared with the
    K targets of an image and any other DeepLIFT of the call with the same baseline.
    """
    batch_size = oracle.chunk(batch_size, images.shape[0], grad=True, probe=gradient_probe(oracle))
    one = not isinstance(baseline, torch.Tensor) or baseline.dim() == 3
    ref = reference_set(baseline, oracle.images[:1] if one else oracle.images, 1, 0)  # (B or 1, 1, C, H, W)
    if ref.shape[1] != 1:
        raise InputError("deeplift takes one baseline per image; for a set of references use deepliftshap")
    rec = recorded(oracle, ref[:, 0], _reference_key(baseline, "deeplift"))
    index = None if one else oracle.source
    rows = torch.arange(images.shape[0], device=images.device)
    base = ref[:, 0].expand(images.shape[0], *images.shape[1:]) if one else ref[oracle.source, 0]
    return reduce_channels(deeplift_attributions(oracle, images, rec, base, index, rows, batch_size), reduce)


RESCALE_MEMORY = 1.7  # a rescaled pass's peak over the plain forward + backward the budget estimates (resnet18)


@register_method("deepliftshap", "gradient", applies=_has_activation)
def deepliftshap(images: torch.Tensor, oracle: Oracle, *, references: float | torch.Tensor | str = "uniform",
                 n_references: int = 8, seed: int = 0, reduce: str = "sum",
                 batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT-SHAP (Lundberg & Lee, NeurIPS 2017): the mean over references x'_j of DeepLIFT(x, x'_j).

    references: a tensor (M, C, H, W) of reference images shared by all images, a number, or "uniform"
    (`n_references` images of uniform noise in each image's value range, from `seed`). The references' forward
    runs once per call, without gradients, shared with the K targets of an image; per-image references are
    recorded a group of images at a time (their activations within a quarter of the memory budget, the
    differentiated chunks within the rest), then let go.
    """
    per_image = reference_set(references, oracle.images, n_references, seed)  # (B, M, C, H, W)
    b, m = per_image.shape[:2]
    n = images.shape[0]
    shared = not isinstance(references, str)
    cost = budget.input_cost(oracle.core, tuple(images.shape[1:]), images.dtype)  # bytes of one forward per input
    whole = budget.budget(images.device, grad=True)
    # per-image references: a group of images whose references' activations take at most a quarter of the budget,
    # and the differentiated chunks the rest of it (the recorded activations live while the group's chunks run)
    group = b if shared or cost is None else max(1, whole // 4 // (cost * m))
    kept = 0 if shared or cost is None else min(b, group) * m * cost
    with budget.memory_budget(max(1, int((whole - kept) / RESCALE_MEMORY))):
        batch_size = oracle.chunk(batch_size, n * m, grad=True, probe=gradient_probe(oracle))
    if shared:  # the same M references for every image: recorded once for the call
        rec = recorded(oracle, per_image[0], _reference_key(references, n_references, seed, "deepliftshap"))
        rows = torch.arange(n, device=images.device).repeat_interleave(m)
        j = torch.arange(m, device=images.device).repeat(n)
        attr = deeplift_attributions(oracle, images[rows], rec, per_image[0][j], j, rows, batch_size)
        return reduce_channels(attr.view(n, m, *images.shape[1:]).mean(dim=1), reduce)
    attr = torch.empty((n, m, *images.shape[1:]), dtype=images.dtype, device=images.device)
    for first in range(0, b, group):
        refs = per_image[first : first + group].flatten(0, 1)  # (G·M, C, H, W): recorded, used, then let go
        rec = record(oracle, refs)
        mine = ((oracle.source >= first) & (oracle.source < first + group)).nonzero()[:, 0].to(images.device)
        rows = mine.repeat_interleave(m)
        j = torch.arange(m, device=images.device).repeat(len(mine))
        index = (oracle.source.to(images.device)[rows] - first) * m + j
        attr[rows, j] = deeplift_attributions(oracle, images[rows], rec, refs[index], index, rows, batch_size)
    return reduce_channels(attr.mean(dim=1), reduce)


def sample_mean(oracle: Oracle, n_rows: int, n: int, sample: Callable[[torch.Tensor, torch.Tensor], tuple],
                batch_size: int, like: torch.Tensor) -> torch.Tensor:
    """(1/n) Σ_j w_ij ⊙ ∇y(p_ij) per row (n_rows, C, H, W); `sample(i, j)` gives the points p and weights w."""
    total = torch.zeros_like(like)
    for start in range(0, n_rows * n, batch_size):
        flat = torch.arange(start, min(start + batch_size, n_rows * n), device=like.device)
        i, j = flat // n, flat % n
        points, weights = sample(i, j)
        total.index_add_(0, i, weights * oracle.input_gradients(points, i))
    return total / n


def gradient_shap_sample(images: torch.Tensor, references: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor,
                         noise: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], tuple]:
    """GradientSHAP's sample (i, j): x̃ = x_i + noise[i, j], b = references[i, index[i, j]],
    p = b + α[i, j] (x̃ − b), weight x̃ − b. Draws are (N, n) (`noise` (N, n, C, H, W))."""

    def sample(i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = images[i] + noise[i, j]
        base = references[i, index[i, j]]
        return base + alpha[i, j].view(-1, 1, 1, 1) * (noisy - base), noisy - base

    return sample


@register_method("gradientshap", "gradient")
def gradientshap(images: torch.Tensor, oracle: Oracle, *, references: float | torch.Tensor | str = "uniform",
                 n_references: int = 8, n: int = 50, stdev: float = 0.0, seed: int = 0, reduce: str = "sum",
                 batch_size: int | None = None) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee, NeurIPS 2017; as captum's): mean_j (x̃_j − b_j) ⊙ ∇y(b_j + α_j (x̃_j − b_j)),
    b_j drawn from the references, α_j ~ U(0, 1), x̃_j = x + N(0, stdev²).

    The n draws come from `seed` and are the same for every image, so a map does not depend on its
    batch. references as in `deepliftshap`.
    """
    positive_int("n", n, at_most=MAX_POINTS)
    batch_size = oracle.chunk(batch_size, images.shape[0] * n, grad=True, probe=gradient_probe(oracle))
    if not stdev >= 0:
        raise InputError(f"stdev must be >= 0, got {stdev!r}")
    ref = reference_set(references, images, n_references, seed)  # (N, M, C, H, W)
    gen = torch.Generator().manual_seed(seed + 1)
    rows = images.shape[0]
    index = torch.randint(ref.shape[1], (n,), generator=gen).to(images.device).expand(rows, n)
    alpha = torch.rand((n,), generator=gen).to(images).expand(rows, n)
    noise = (stdev * torch.randn((n, *images.shape[1:]), generator=gen)).to(images).expand(rows, *(-1,) * 4)
    sample = gradient_shap_sample(images, ref, index, alpha, noise)
    return reduce_channels(sample_mean(oracle, rows, n, sample, batch_size, images), reduce)
