"""The repaired randomisation tests: what papers report now that plain top-down MPRT cannot rank
methods (Binder et al., CVPR 2023; Hedström et al., TMLR 2023).

- sMPRT, smooth MPRT (Hedström et al. 2023): the cascade of `model_randomization`, bottom-up by
  default, on maps averaged over noisy copies of the input, ê(x) = (1/N) Σ_j e(x + δ_j),
  δ_j ~ N(0, (σ · (max x − min x))²), so that gradient noise does not pass for sensitivity to the
  model. A method passes when its similarity falls.
- eMPRT, efficient MPRT (Hedström et al. 2023): the relative rise of the maps' complexity once every
  block is randomised, (H(ê_random) − H(ê_trained)) / H(ê_trained), H the entropy of the maps'
  value histogram (100 bins). A method passes when its maps get more complex (rise > 0).
- random-logit (Sixt et al., ICML 2020): similarity of the map of the explained class and the map
  of a random other class, on the trained model. A method passes when they differ (low similarity).

Each returns a `SanityResult`, so the tidy table, CIs and plots are those of the other tests.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from attnscope import console, draws
from attnscope.errors import InputError
from attnscope.explain import explain
from attnscope.explain.engine import logits as forward_logits
from attnscope.explain.engine import model_guard
from attnscope.explain.layers import LayerSpec
from attnscope.explain.targets import TargetSpec
from attnscope.metrics.checks import positive_int
from attnscope.metrics.complexity import histogram_entropy
from attnscope.metrics.similarity import similarities
from attnscope.modules import device_of
from attnscope.sanity.blocks import Granularity, Init, reinitialise, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.randomization import CALIBRATION, Options, _checked, _kept, _metrics, randomise
from attnscope.sanity.result import SanityResult

ALL_BLOCKS = "all blocks"
RANDOM_CLASS = "random class"


def noise_draws(images: torch.Tensor, samples: int = 50, sigma: float = 0.1, seed: int = 0,
                index: torch.Tensor | None = None) -> torch.Tensor:
    """δ (N, B, C, H, W): N(0, 1) draws scaled per image by σ · (max x − min x) (sMPRT's noise); image r's
    from its own generator, seeded by `seed` and its data-set index `index[r]` (default r; `attnscope.draws`)."""
    positive_int("samples", samples)
    if not sigma >= 0:
        raise InputError(f"sigma must be >= 0 (a fraction of each image's value range), got {sigma!r}")
    rows = draws.indices(index, images.shape[0])
    z = draws.per_image(lambda g: torch.randn((samples, *images.shape[1:]), generator=g, dtype=torch.float64),
                        seed, rows).transpose(0, 1)
    scale = sigma * (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))).double().cpu()  # (B,)
    return (z * scale.view(1, -1, 1, 1, 1)).to(device=images.device, dtype=images.dtype)


def smoothed_maps(model: nn.Module, images: torch.Tensor, noise: torch.Tensor, methods: Sequence[str],
                  targets: TargetSpec = None, layer: LayerSpec = "auto", options: Options = None,
                  batch_size: int | None = 256) -> dict[str, torch.Tensor]:
    """(1/N) Σ_j e(x + δ_j) (B, H, W) for each method, `noise` δ (N, B, C, H, W); one `explain` call
    on the N·B noisy copies (in chunks of `batch_size`), each for its image's class (`targets`;
    None: the class the model predicts for the clean image)."""
    n, b = noise.shape[:2]
    if noise.shape[1:] != images.shape:
        raise InputError(f"noise must be (N, B, C, H, W) with (B, C, H, W) = {tuple(images.shape)}, "
                         f"got {tuple(noise.shape)}")
    device = device_of(model)
    images, noise = images.to(device), noise.to(device)
    classes = _classes(model, images, targets)
    noisy = (images[None] + noise).flatten(0, 1)  # draw-major: copy j of image i at j·B + i
    found = explain(model, noisy, methods, classes.repeat(n) if isinstance(classes, torch.Tensor) else classes,
                    layer, options, batch_size)
    return {k: v.values.view(n, b, *v.values.shape[1:]).mean(0) for k, v in found.items()}


def smprt(model: nn.Module, images: torch.Tensor, methods: Sequence[str] = ("gradcam", "saliency"),
          targets: TargetSpec = None, samples: int = 50, sigma: float = 0.1, seed: int = 0,
          noise: torch.Tensor | None = None, order: str = "bottom-up", blocks: Granularity = "layer",
          init: str | Init = "default", block_seed: Callable[[int, str], int] | None = None,
          metrics: Sequence[str] | None = None, calibration: Sequence[str] = CALIBRATION, layer: LayerSpec = "auto",
          options: Options = None, batch_size: int | None = 256, keep: int = 4, progress: bool = False,
          reuse: bool = True, index: torch.Tensor | None = None) -> SanityResult:
    """Smooth MPRT (Hedström et al. 2023): the cascading randomisation test (`model_randomization`,
    `order` "bottom-up" as the paper's code, or "top-down") on maps averaged over `samples` noisy
    copies (`noise_draws`; the same draws at every step, or the given `noise` (N, B, C, H, W)).
    `metrics=None`: as in `model_randomization` (the defaults that fit the images' size, with notes)."""
    metrics, notes = _metrics(metrics, images)
    methods = _checked(methods, metrics, calibration)
    noise = noise_draws(images, samples, sigma, seed, index) if noise is None else noise

    def maps_of(work: nn.Module, layer_name: LayerSpec) -> dict[str, torch.Tensor]:
        return smoothed_maps(work, images, noise, methods, targets, layer_name, options, batch_size)

    result = randomise(model, images, maps_of, methods, "cascading", order, blocks, init, seed, block_seed, metrics,
                       calibration, layer, keep, progress, reuse=reuse, test="smprt", index=index)
    result.meta.update(samples=int(noise.shape[0]), sigma=sigma, noise_seed=seed, notes=[*notes, *result.meta["notes"]],
                       targets="predicted" if targets is None else "given",
                       options={k: dict(v) for k, v in (options or {}).items()})
    return result


def emprt(model: nn.Module, images: torch.Tensor, methods: Sequence[str] = ("gradcam", "saliency"),
          targets: TargetSpec = None, bins: int = 100, blocks: Granularity = "layer", init: str | Init = "default",
          seed: int = 0, block_seed: Callable[[int, str], int] | None = None,
          calibration: Sequence[str] = CALIBRATION, layer: LayerSpec = "auto", options: Options = None,
          batch_size: int | None = None, keep: int = 4, progress: bool = False,
          index: torch.Tensor | None = None) -> SanityResult:
    """Efficient MPRT (Hedström et al. 2023): per image, `complexity_rise` = (H_r − H_t) / H_t of the
    histogram entropy (`bins` bins) of the maps of the trained model (H_t) and of the model with every
    block re-initialised (H_r); both entropies are in the table too. NaN where H_t = 0 (a constant map)."""
    methods = _checked(methods, ("spearman_abs",), calibration)
    started = time.perf_counter()
    work = copy.deepcopy(model).eval()
    traced = trace_blocks(work, images[:1].to(device_of(work)), blocks)
    seeds = {b.name: int(block_seed(b.position, b.name)) if block_seed else seed + b.position for b in traced}

    def maps() -> dict[str, torch.Tensor]:
        return {k: v.values for k, v in explain(work, images, methods, targets, layer, options, batch_size).items()}

    with console.progress(2, "eMPRT", progress) as bar:
        trained = {**maps(), **{c: CALIBRATIONS.get(c)(images, 0, seed, index=index) for c in calibration}}
        bar.advance(1, model="trained")
        for block in traced:
            reinitialise(block, init, seeds[block.name])
        random = {**maps(), **{c: CALIBRATIONS.get(c)(images, 1, seed, index=index) for c in calibration}}
        bar.advance(1, model="randomised")
    result = SanityResult("emprt", [ALL_BLOCKS], {}, images=images[:keep].detach().cpu())
    for name, m in trained.items():
        h_t, h_r = histogram_entropy(m.double(), bins).cpu(), histogram_entropy(random[name].double(), bins).cpu()
        rise = torch.where(h_t > 0, (h_r - h_t) / h_t.clamp_min(1e-300), torch.full_like(h_t, float("nan")))
        result.scores[name] = {ALL_BLOCKS: {"complexity_rise": rise, "entropy_trained": h_t, "entropy_random": h_r}}
    result.maps = {"trained": _kept(trained, keep), ALL_BLOCKS: _kept(random, keep)}
    result.meta = {"test": "emprt", "bins": bins, "blocks": blocks if isinstance(blocks, (str, int)) else list(blocks),
                   "init": init if isinstance(init, str) else getattr(init, "__name__", repr(init)), "seeds": seeds,
                   "targets": "predicted" if targets is None else "given", "images": int(images.shape[0]),
                   "metrics": ["complexity_rise", "entropy_trained", "entropy_random"],
                   "calibration": list(calibration), "seconds": time.perf_counter() - started}
    return result


def random_logit(model: nn.Module, images: torch.Tensor, methods: Sequence[str] = ("gradcam", "saliency"),
                 targets: TargetSpec = None, other: torch.Tensor | None = None, seed: int = 0,
                 metrics: Sequence[str] | None = None, calibration: Sequence[str] = CALIBRATION,
                 layer: LayerSpec = "auto", options: Options = None, batch_size: int | None = None,
                 keep: int = 4, progress: bool = False, index: torch.Tensor | None = None) -> SanityResult:
    """Random-logit test (Sixt et al., ICML 2020): similarity of each image's map for its class
    (`targets`; None: the predicted one) and for a random other class (`other` (B,), default drawn
    uniformly among the other classes, image r's from `seed` and `index[r]`). Low similarity passes.
    `metrics=None`: as in `model_randomization`."""
    metrics, notes = _metrics(metrics, images)
    methods = _checked(methods, metrics, calibration)
    started = time.perf_counter()
    device = device_of(model)
    logits = _logits(model, images.to(device))
    classes = _classes(model, images.to(device), targets, logits)
    if not isinstance(classes, torch.Tensor):
        raise InputError("the random-logit test needs class targets (None, an int or a LongTensor[B]), not a callable")
    k = logits.shape[1]
    if k < 2:
        raise InputError("the random-logit test needs a model with at least two classes")
    if other is None:
        rows = draws.indices(index, images.shape[0])  # image r's draw from its own seed (`attnscope.draws`)
        pick = draws.per_image(lambda g: torch.randint(0, k - 1, (), generator=g), seed, rows).to(device)
        other = pick + (pick >= classes).long()  # uniform over the classes other than the explained one
    other = other.to(device)
    if other.shape != classes.shape or bool((other == classes).any()) or bool(((other < 0) | (other >= k)).any()):
        raise InputError(f"other classes must be (B,) in [0, {k}) and differ from the explained class of each image")
    with console.progress(2, "random-logit", progress) as bar:
        same = {k_: v.values for k_, v in explain(model, images, methods, classes, layer, options, batch_size).items()}
        bar.advance(1, classes="explained")
        off = {k_: v.values for k_, v in explain(model, images, methods, other, layer, options, batch_size).items()}
        bar.advance(1, classes="random")
    for c in calibration:
        same[c], off[c] = (CALIBRATIONS.get(c)(images, draw, seed, index=index) for draw in (0, 1))
    result = SanityResult("random-logit", [RANDOM_CLASS], {}, images=images[:keep].detach().cpu())
    for name in same:
        result.scores[name] = {RANDOM_CLASS: similarities(same[name], off[name], metrics)}
    result.maps = {"trained": _kept(same, keep), RANDOM_CLASS: _kept(off, keep)}
    result.meta = {"test": "random-logit", "targets": "predicted" if targets is None else "given",
                   "other": other.cpu().tolist(), "seed": seed, "metrics": list(metrics), "notes": notes,
                   "calibration": list(calibration), "images": int(images.shape[0]),
                   "seconds": time.perf_counter() - started}
    return result


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with model_guard(model):
        return forward_logits(model, images)


def _classes(model: nn.Module, images: torch.Tensor, targets: TargetSpec,
             logits: torch.Tensor | None = None) -> TargetSpec:
    """The class of each image: the given targets, or (None) the model's prediction."""
    if targets is not None:
        if isinstance(targets, int) and not isinstance(targets, bool):
            return torch.full((images.shape[0],), targets, dtype=torch.long, device=images.device)
        return targets.to(images.device) if isinstance(targets, torch.Tensor) else targets
    return (_logits(model, images) if logits is None else logits).argmax(1)
