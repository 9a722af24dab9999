"""Robustness of methods' maps to small input perturbations: explain perturbed copies of the images
and score how much the maps move (`attnscope.metrics.robustness` holds the formulas).

All methods asked together are explained on the perturbed copies in one `explain` call (sharing
its passes), and every robustness metric reads the same perturbed maps: for M methods, n
perturbations and R metrics this costs one explanation of B·n images, not M·R·n of B.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnscope import draws
from attnscope.errors import InputError
from attnscope.explain import Explainer, OutputSpec, TargetSpec, as_explainer, budget, logits, model_guard
from attnscope.metrics import robustness as rob
from attnscope.metrics.checks import positive_int
from attnscope.modules import device_of
from attnscope.registry import Registry

MapsFn = Callable[..., Mapping[str, torch.Tensor]]  # (images, classes[, index=, draw=]) -> {name: maps}
Noise = Callable[[torch.Tensor, int, float, torch.Generator], torch.Tensor]  # images, n, radius, gen -> δ
NOISES: Registry[Noise] = Registry("noise")


@NOISES.register("uniform")
def uniform_noise(images: torch.Tensor, n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """δ ~ U(−r, r) for every pixel and channel (Yeh et al. 2019; captum's default, r = 0.02): (B, n, C, H, W)."""
    u = torch.rand((images.shape[0], n, *images.shape[1:]), generator=generator, dtype=torch.float64)
    return ((2 * u - 1) * radius).to(device=images.device, dtype=images.dtype)


@NOISES.register("gaussian")
def gaussian_noise(images: torch.Tensor, n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """δ ~ N(0, r²) for every pixel and channel (Alvarez-Melis & Jaakkola 2018): (B, n, C, H, W)."""
    g = torch.randn((images.shape[0], n, *images.shape[1:]), generator=generator, dtype=torch.float64)
    return (g * radius).to(device=images.device, dtype=images.dtype)


@dataclass(frozen=True)
class Views:
    """What the robustness metrics read for one method: its maps (B, H, W) and those of the n
    perturbed copies (B, n, H, W), the inputs, the logits, and which perturbations kept the prediction."""

    maps: torch.Tensor
    perturbed_maps: torch.Tensor
    images: torch.Tensor
    perturbed_images: torch.Tensor
    logits: torch.Tensor
    perturbed_logits: torch.Tensor
    kept: torch.Tensor  # (B, n) bool


@dataclass(frozen=True)
class Metric:
    """A robustness metric and whether it counts only perturbations that keep the predicted class."""

    fn: Callable[[Views, torch.Tensor | None], torch.Tensor]
    same_prediction: bool


METRICS: Registry[Metric] = Registry("robustness metric")
METRICS.register("max_sensitivity", Metric(lambda v, ok: rob.max_sensitivity(v.maps, v.perturbed_maps, ok), False))
METRICS.register("avg_sensitivity", Metric(lambda v, ok: rob.avg_sensitivity(v.maps, v.perturbed_maps, ok), False))
METRICS.register("local_lipschitz", Metric(
    lambda v, ok: rob.local_lipschitz(v.maps, v.perturbed_maps, v.images, v.perturbed_images, ok), False))
METRICS.register("ris", Metric(
    lambda v, ok: rob.relative_input_stability(v.maps, v.perturbed_maps, v.images, v.perturbed_images, ok), True))
METRICS.register("ros", Metric(
    lambda v, ok: rob.relative_output_stability(v.maps, v.perturbed_maps, v.logits, v.perturbed_logits, ok), True))


def perturb(images: torch.Tensor, n: int = 10, noise: str = "uniform", radius: float = 0.02,
            seed: int = 0, index: torch.Tensor | None = None) -> torch.Tensor:
    """`n` perturbed copies x + δ of each image (B, n, C, H, W), δ drawn by `NOISES[noise]`, image r's from
    its own generator seeded by `seed` and its data-set index `index[r]` (default r; `attnscope.draws`)."""
    positive_int("perturbations", n)
    if not radius > 0:
        raise InputError(f"the perturbation radius must be > 0, got {radius!r}")
    draw = NOISES.get(noise)
    rows = draws.indices(index, images.shape[0])
    delta = draws.per_image(lambda g: draw(images[:1], n, radius, g)[0], seed, rows)
    return images[:, None] + delta.to(device=images.device, dtype=images.dtype)


def score_robustness(explainer: MapsFn, logits_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     targets: torch.Tensor, perturbed: torch.Tensor, metrics: Sequence[str] | None = None,
                     maps: Mapping[str, torch.Tensor] | None = None,
                     logits: torch.Tensor | None = None,
                     index: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """`{name: {metric: (B,)}}` for every map `explainer(images, targets)` gives, from its maps of the
    `perturbed` copies (B, n, C, H, W) explained for the same `targets` (B,). `maps` and `logits` of
    the unperturbed images may be passed when already computed. With the images' data-set `index` (B,) the
    explainer is also given `index=` and `draw=` (copy j of image i: index i, draw j + 1) for its own draws."""
    names = METRICS.names() if metrics is None else list(metrics)
    for name in names:
        METRICS.get(name)
    b, n = perturbed.shape[:2]
    if perturbed.shape[0] != images.shape[0] or perturbed.shape[2:] != images.shape[1:]:
        raise InputError(f"perturbed images must be (B, n, C, H, W) with (B, C, H, W) = {tuple(images.shape)}, "
                         f"got {tuple(perturbed.shape)}")
    maps = dict(explainer(images, targets)) if maps is None else dict(maps)
    logits = logits_of(images) if logits is None else logits
    flat = perturbed.flatten(0, 1)
    where = {} if index is None else {"index": draws.indices(index, b).repeat_interleave(n),
                                      "draw": torch.arange(1, n + 1).repeat(b)}
    moved = explainer(flat, targets.repeat_interleave(n), **where)
    moved_logits = getattr(moved, "logits", None)  # an Explanation carries its pass's logits
    moved_logits = (logits_of(flat) if moved_logits is None else moved_logits).view(b, n, -1)
    kept = moved_logits.argmax(2) == logits.argmax(1)[:, None]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, m in maps.items():
        views = Views(m, moved[name].view(b, n, *m.shape[1:]), images, perturbed, logits, moved_logits, kept)
        out[name] = {k: METRICS.get(k).fn(views, kept if METRICS.get(k).same_prediction else None).cpu()
                     for k in names}
    return out


def robustness(model: nn.Module, images: torch.Tensor, how: Explainer | str | Sequence[str],
               targets: TargetSpec = None, metrics: Sequence[str] | None = None, n: int = 10, noise: str = "uniform",
               radius: float = 0.02, seed: int = 0,
               perturbed: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Robustness of the maps of each method of `how` (`METRICS`: max/avg sensitivity, local Lipschitz
    estimate, relative input/output stability) to `n` perturbations x + δ (`noise`, `radius`, `seed`), or to
    the given `perturbed` copies (B, n, C, H, W). The perturbed copies are explained for the class
    explained on the original image (`targets`, else the `how`'s). Returns `{method: {metric: (B,)}}`."""
    how = as_explainer(how)
    device = device_of(model)
    images = images.to(device)
    perturbed = perturb(images, n, noise, radius, seed) if perturbed is None else perturbed.to(device)
    first = how(model, images, targets)
    classes = first[next(iter(first))].targets.to(device)

    def explainer(x: torch.Tensor, c: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return Maps(how(model, x, c))

    return score_robustness(explainer, lambda x: logits_of(model, x, how.batch_size, how.output), images, classes,
                            perturbed, metrics, maps={k: v.values for k, v in first.items()},
                            logits=getattr(first, "logits", None))


class Maps(dict):
    """`{name: values}` of an explanation, keeping its `.logits` when it has them."""

    def __init__(self, explanation: Mapping[str, Any]) -> None:
        super().__init__({k: v.values for k, v in explanation.items()})
        self.logits = getattr(explanation, "logits", None)


def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
              output: OutputSpec = None) -> torch.Tensor:
    """Logits (N, K) of `x` (the part of the model's output `output` selects), no gradients, in chunks of
    `batch_size` (None: from the memory budget, `explain.budget`). (Explanations that carry `.logits` make
    this unneeded.)"""
    device = device_of(model)
    with model_guard(model):
        cost = budget.input_cost(model, tuple(x.shape[1:]), x.dtype)
        chunk = budget.chunk_size(cost, device, batch_size, x.shape[0], grad=False)
        return logits(model, x.to(device), chunk, output)
