"""Robustness of maps: how much does a map change when the input changes a little?

Pure tensor functions of a map Φ(x) (B, H, W) and the maps of `n` perturbed copies Φ(x_j)
(B, n, H, W), with the inputs (B, C, H, W) / (B, n, C, H, W) or logits (B, K) / (B, n, K) where a
metric needs them. `valid` (B, n) bool says which perturbations count (e.g. those that kept the
predicted class, as Agarwal et al. require); an image with none gets NaN. Explaining the perturbed
inputs is the caller's job: `attnscope.evaluate.robustness` does it for many methods at once.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_maps, takes_maps
from attnscope.metrics.declare import declare
from attnscope.modules import all_finite

EPS_MIN = 1e-6  # Agarwal et al.'s ε_min: the smallest denominator of a relative change


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Frobenius norm over every dimension after the first two: (B, n, ...) → (B, n)."""
    return t.flatten(2).double().norm(dim=2)


def _checked(maps: torch.Tensor, perturbed: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    check_maps(maps)
    if not isinstance(perturbed, torch.Tensor) or perturbed.dim() != 4 or perturbed.shape[0] != maps.shape[0] \
            or perturbed.shape[2:] != maps.shape[1:]:
        raise InputError(f"perturbed maps must be (B, n, H, W) with (B, H, W) = {tuple(maps.shape)}, "
                         f"got {tuple(getattr(perturbed, 'shape', ()))}")
    if not all_finite(perturbed):
        raise InputError("perturbed maps contain NaN or infinite values")
    shape = perturbed.shape[:2]
    if valid is None:
        return torch.ones(shape, dtype=torch.bool, device=maps.device)
    if valid.shape != shape or valid.dtype != torch.bool:
        raise InputError(f"valid must be bool (B, n) = {tuple(shape)}, got {valid.dtype} {tuple(valid.shape)}")
    return valid.to(maps.device)


def _max(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """max_j over the valid perturbations of (B, n) values; NaN where none is valid. (B,)."""
    out = torch.where(valid, values, torch.full_like(values, -torch.inf)).amax(1)
    return torch.where(valid.any(1), out, torch.full_like(out, float("nan")))


def _mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    count = valid.sum(1)
    out = torch.where(valid, values, torch.zeros_like(values)).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


@takes_maps
def sensitivities(maps: torch.Tensor, perturbed: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """‖Φ(x_j) − Φ(x)‖_F / ‖Φ(x)‖_F for every perturbation (B, n) (an all-zero Φ(x) divides by 1, as captum)."""
    _checked(maps, perturbed, valid)
    top = maps.flatten(1).double().norm(dim=1)
    return _norm(perturbed - maps[:, None]) / torch.where(top > 0, top, torch.ones_like(top))[:, None]


@declare("max_sensitivity", "robustness", per_method=False, default=False, higher_is_better=False,
         short="maxS", legend="max-sensitivity")
@takes_maps
def max_sensitivity(maps: torch.Tensor, perturbed: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Max-sensitivity (Yeh et al., NeurIPS 2019): max_j ‖Φ(x_j) − Φ(x)‖ / ‖Φ(x)‖ over perturbations in
    a small ball (captum's `sensitivity_max`, Quantus' `MaxSensitivity`). Lower is better. (B,)."""
    return _max(sensitivities(maps, perturbed, valid), _checked(maps, perturbed, valid))


@declare("avg_sensitivity", "robustness", per_method=False, default=False, higher_is_better=False,
         short="avgS", legend="avg-sensitivity")
@takes_maps
def avg_sensitivity(maps: torch.Tensor, perturbed: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Average sensitivity (Yeh et al. 2019): the mean over perturbations of ‖Φ(x_j) − Φ(x)‖ / ‖Φ(x)‖. (B,)."""
    return _mean(sensitivities(maps, perturbed, valid), _checked(maps, perturbed, valid))


@declare("local_lipschitz", "robustness", per_method=False, default=False, higher_is_better=False,
         short="lips", legend="local Lipschitz estimate")
@takes_maps
def local_lipschitz(maps: torch.Tensor, perturbed: torch.Tensor, images: torch.Tensor, perturbed_images: torch.Tensor,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max_j ‖Φ(x) − Φ(x_j)‖₂ / (‖x − x_j‖₂ + 1e-10)
    over perturbations x_j near x. Lower is better. (B,)."""
    valid = _checked(maps, perturbed, valid)
    _check_inputs(images, perturbed_images, perturbed.shape[1])
    ratio = _norm(perturbed - maps[:, None]) / (_norm(perturbed_images - images[:, None]) + 1e-10)
    return _max(ratio, valid)


def _relative(new: torch.Tensor, old: torch.Tensor, eps: float) -> torch.Tensor:
    """(old − new) / old element-wise, zeros of `old` replaced by `eps` (Agarwal et al., Eq. 2–3)."""
    old = old.double()
    return (old - new.double()) / torch.where(old == 0, torch.full_like(old, eps), old)


@declare("ris", "robustness", per_method=False, default=False, higher_is_better=False,
         short="ris", legend="relative input stability")
@takes_maps
def relative_input_stability(maps: torch.Tensor, perturbed: torch.Tensor, images: torch.Tensor,
                             perturbed_images: torch.Tensor, valid: torch.Tensor | None = None,
                             eps: float = EPS_MIN) -> torch.Tensor:
    """Relative input stability (Agarwal et al., NeurIPS 2022): max_j ‖(Φ(x) − Φ(x_j)) / Φ(x)‖ /
    max(‖(x − x_j) / x‖, ε_min), ratios element-wise (zeros replaced by ε_min), Frobenius norms. (B,)."""
    valid = _checked(maps, perturbed, valid)
    _check_inputs(images, perturbed_images, perturbed.shape[1])
    num = _norm(_relative(perturbed, maps[:, None], eps))
    den = _norm(_relative(perturbed_images, images[:, None], eps))
    return _max(num / torch.where(den == 0, torch.full_like(den, eps), den), valid)


@declare("ros", "robustness", per_method=False, default=False, higher_is_better=False,
         short="ros", legend="relative output stability")
@takes_maps
def relative_output_stability(maps: torch.Tensor, perturbed: torch.Tensor, logits: torch.Tensor,
                              perturbed_logits: torch.Tensor, valid: torch.Tensor | None = None,
                              eps: float = EPS_MIN) -> torch.Tensor:
    """Relative output stability (Agarwal et al., NeurIPS 2022): max_j ‖(Φ(x) − Φ(x_j)) / Φ(x)‖ /
    max(‖h(x) − h(x_j)‖, ε_min), h the logits. (B,)."""
    valid = _checked(maps, perturbed, valid)
    b, n = perturbed.shape[:2]
    if logits.dim() != 2 or logits.shape[0] != b or perturbed_logits.shape != (b, n, logits.shape[1]):
        raise InputError(f"logits must be (B, K) and perturbed logits (B, n, K) with B = {b}, n = {n}, got "
                         f"{tuple(logits.shape)} and {tuple(perturbed_logits.shape)}")
    num = _norm(_relative(perturbed, maps[:, None], eps))
    den = (logits[:, None].double() - perturbed_logits.double()).norm(dim=2)
    return _max(num / torch.where(den == 0, torch.full_like(den, eps), den), valid)


def _check_inputs(images: torch.Tensor, perturbed_images: torch.Tensor, n: int) -> None:
    if images.dim() != 4 or perturbed_images.shape != (images.shape[0], n, *images.shape[1:]):
        raise InputError(f"images must be (B, C, H, W) and perturbed images (B, n, C, H, W) with n = {n}, got "
                         f"{tuple(images.shape)} and {tuple(perturbed_images.shape)}")
