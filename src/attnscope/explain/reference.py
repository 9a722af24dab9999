"""Attributions relative to reference inputs: DeepLIFT (Rescale rule), DeepLIFT-SHAP and GradientSHAP.

DeepLIFT (Shrikumar et al., ICML 2017) explains y(x) − y(x') by multipliers m = Δout / Δin that replace
each nonlinearity's derivative. Here that is the registered rewrite `deeplift-rescale`: the input and
its reference run as one batch [x; x'] (one forward), a hook on every elementwise activation module
swaps its backward for the multiplier computed from the two halves, and one backward gives
m_x; the attribution is (x − x') ⊙ m_x. Max pooling keeps its gradient (the paper's choice for max
operations; captum applies its own rule to MaxPool, see docs/methods.md). DeepLIFT-SHAP averages
DeepLIFT over a set of references; GradientSHAP (Lundberg & Lee, NeurIPS 2017; captum's estimator)
averages (x̃ − b) ⊙ ∇y(b + α (x̃ − b)) over random references b, α ~ U(0, 1) and noisy inputs x̃.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.explain.rewrites import register_rewrite
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


@register_rewrite("deeplift-rescale", applies=lambda m: isinstance(m, ELEMENTWISE))
def _rescale(_name: str, module: nn.Module) -> tuple[None, Callable[[], None]]:
    """DeepLIFT's Rescale rule on one activation module, for a batch [inputs; references] split in halves."""
    seen: list[torch.Tensor] = []

    def before(_module: nn.Module, inputs):
        seen[:] = [inputs[0]]
        return (inputs[0].clone(), *inputs[1:])  # an in-place activation then leaves the input intact

    def after(_module: nn.Module, _inputs, output):
        if not (isinstance(output, torch.Tensor) and output.requires_grad and output.shape[0] % 2 == 0):
            return None
        x_in, ref_in = seen[0].chunk(2)
        x_out, ref_out = output.chunk(2)
        delta_in, delta_out = (x_in - ref_in).detach(), (x_out - ref_out).detach()
        near = delta_in.abs() < RESCALE_EPS
        multiplier = torch.where(near, 0.0, delta_out / torch.where(near, 1.0, delta_in))
        return torch.cat([_Rescaled.apply(x_in, x_out, multiplier, near), ref_out])

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return None, lambda: [h.remove() for h in handles]


def _has_activation(model: nn.Module) -> str | None:
    if any(isinstance(m, ELEMENTWISE) for m in model.modules()):
        return None
    return "DeepLIFT rewrites activation modules (nn.ReLU, nn.Sigmoid, ...) and this model has none"


def deeplift_attributions(oracle: Oracle, images: torch.Tensor, references: torch.Tensor, rows: torch.Tensor,
                          batch_size: int) -> torch.Tensor:
    """(x − x') ⊙ m_x (M, C, H, W) for inputs `images` (M, ...) against `references` (M, ...), input i for `rows[i]`.

    Each chunk of `batch_size` pairs is one forward of [inputs; references] and one backward.
    """
    out = torch.empty_like(images)
    for s in range(0, images.shape[0], batch_size):
        x, ref, r = images[s : s + batch_size], references[s : s + batch_size], rows[s : s + batch_size]
        grads = oracle.input_gradients(torch.cat([x, ref]), torch.cat([r, r]), rewrite="deeplift-rescale")
        out[s : s + batch_size] = (x - ref) * grads[: x.shape[0]]
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


@register_method("deeplift", "gradient", applies=_has_activation)
def deeplift(images: torch.Tensor, oracle: Oracle, *, baseline: float | torch.Tensor = 0.0, reduce: str = "sum",
             batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT, Rescale rule (Shrikumar et al., ICML 2017): (x − x') ⊙ m, m the multipliers Δy / Δx through
    activations rescaled by Δout / Δin; Σ attributions = y(x) − y(x') on nets of linear layers and such activations."""
    batch_size = oracle.chunk(batch_size, images.shape[0], grad=True)
    ref = reference_set(baseline, images, 1, 0)
    if ref.shape[1] != 1:
        raise InputError("deeplift takes one baseline per image; for a set of references use deepliftshap")
    rows = torch.arange(images.shape[0], device=images.device)
    return reduce_channels(deeplift_attributions(oracle, images, ref[:, 0], rows, batch_size), reduce)


@register_method("deepliftshap", "gradient", applies=_has_activation)
def deepliftshap(images: torch.Tensor, oracle: Oracle, *, references: float | torch.Tensor | str = "uniform",
                 n_references: int = 8, seed: int = 0, reduce: str = "sum",
                 batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT-SHAP (Lundberg & Lee, NeurIPS 2017): the mean over references x'_j of DeepLIFT(x, x'_j).

    references: a tensor (M, C, H, W) of reference images shared by all images, a number, or "uniform"
    (`n_references` images of uniform noise in each image's value range, from `seed`).
    """
    ref = reference_set(references, images, n_references, seed)  # (N, M, C, H, W)
    n, m = ref.shape[:2]
    batch_size = oracle.chunk(batch_size, n * m, grad=True)
    rows = torch.arange(n, device=images.device).repeat_interleave(m)
    attr = deeplift_attributions(oracle, images[rows], ref.flatten(0, 1), rows, batch_size)
    return reduce_channels(attr.view(n, m, *images.shape[1:]).mean(dim=1), reduce)


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
