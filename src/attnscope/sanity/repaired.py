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
import dataclasses
import time

import torch
from torch import nn

from attnscope import console, draws
from attnscope.errors import InputError
from attnscope.explain import Explainer, TargetSpec, as_explainer, logits, model_guard
from attnscope.metrics.checks import positive_int
from attnscope.metrics.complexity import histogram_entropy
from attnscope.metrics.similarity import similarities
from attnscope.modules import device_of
from attnscope.sanity.blocks import reinitialise, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.randomization import How, _checked, _kept, _metrics, randomise
from attnscope.sanity.result import SanityResult
from attnscope.sanity.settings import Comparison, Randomisation, old_keywords

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


def smoothed_maps(model: nn.Module, images: torch.Tensor, noise: torch.Tensor, how: How,
                  targets: TargetSpec = None) -> dict[str, torch.Tensor]:
    """(1/N) Σ_j e(x + δ_j) (B, H, W) for each method of `how`, `noise` δ (N, B, C, H, W); one explain call on
    the N·B noisy copies (in chunks of `how.batch_size`, 256 when it has none), each for its image's class
    (`targets`, else the `how`'s; None: the class the model predicts for the clean image)."""
    how = as_explainer(how)
    n, b = noise.shape[:2]
    if noise.shape[1:] != images.shape:
        raise InputError(f"noise must be (N, B, C, H, W) with (B, C, H, W) = {tuple(images.shape)}, "
                         f"got {tuple(noise.shape)}")
    device = device_of(model)
    images, noise = images.to(device), noise.to(device)
    classes = _classes(model, images, how, targets)
    noisy = (images[None] + noise).flatten(0, 1)  # draw-major: copy j of image i at j·B + i
    found = how.replace(batch_size=how.batch_size or SMOOTHED_BATCH)(
        model, noisy, classes.repeat(n) if isinstance(classes, torch.Tensor) else classes)
    return {k: v.values.view(n, b, *v.values.shape[1:]).mean(0) for k, v in found.items()}


SMOOTHED_BATCH = 256  # noisy copies per explain call when `how` says none


@old_keywords()
def smprt(model: nn.Module, images: torch.Tensor, how: How = ("gradcam", "saliency"), targets: TargetSpec = None,
          samples: int | torch.Tensor = 50, sigma: float = 0.1, randomisation: Randomisation | None = None,
          comparison: Comparison | None = None, *, progress: bool = False,
          index: torch.Tensor | None = None) -> SanityResult:
    """Smooth MPRT (Hedström et al. 2023): the cascading randomisation test (`model_randomization`, bottom-up
    unless the `randomisation` says "top-down") on maps averaged over `samples` noisy copies (`noise_draws`
    from the randomisation's seed; the same draws at every step) — or over the given noise δ (N, B, C, H, W)
    when `samples` is a tensor. `comparison`: as in `model_randomization` (the default metrics that fit the
    images' size, with notes)."""
    how, comparison = as_explainer(how), comparison or Comparison()
    setup = randomisation or Randomisation()
    setup = setup if setup.order is not None else dataclasses.replace(setup, order="bottom-up")
    comparison, notes = _metrics(comparison, images)
    _checked(how, comparison)
    targets = how.targets if targets is None else targets
    noise = samples if isinstance(samples, torch.Tensor) else noise_draws(images, samples, sigma, setup.seed, index)

    def maps_of(work: nn.Module, layer) -> dict[str, torch.Tensor]:
        return smoothed_maps(work, images, noise, how.replace(layer=layer), targets)

    result = randomise(model, images, maps_of, how, "cascading", setup, comparison, progress=progress,
                       test="smprt", index=index)
    result.meta.update(samples=int(noise.shape[0]), sigma=sigma, noise_seed=setup.seed,
                       notes=[*notes, *result.meta["notes"]], targets="predicted" if targets is None else "given",
                       options=how.settings()["options"], how=how.settings())
    return result


@old_keywords()
def emprt(model: nn.Module, images: torch.Tensor, how: How = ("gradcam", "saliency"), targets: TargetSpec = None,
          bins: int = 100, randomisation: Randomisation | None = None, comparison: Comparison | None = None, *,
          progress: bool = False, index: torch.Tensor | None = None) -> SanityResult:
    """Efficient MPRT (Hedström et al. 2023): per image, `complexity_rise` = (H_r − H_t) / H_t of the
    histogram entropy (`bins` bins) of the maps of the trained model (H_t) and of the model with every
    block re-initialised (H_r); both entropies are in the table too. NaN where H_t = 0 (a constant map).
    The `comparison` gives the calibration maps and the maps kept; its metrics are eMPRT's own."""
    how, setup, comparison = as_explainer(how), randomisation or Randomisation(), comparison or Comparison()
    if comparison.metrics is not None:
        raise InputError("eMPRT scores the rise of the maps' complexity: give no similarity metrics")
    _checked(how, dataclasses.replace(comparison, metrics=("spearman_abs",)))
    targets = how.targets if targets is None else targets
    started = time.perf_counter()
    work = copy.deepcopy(model).eval()
    traced = trace_blocks(work, images[:1].to(device_of(work)), setup.blocks)
    seeds = setup.seeds(traced)

    def maps(draw: int) -> dict[str, torch.Tensor]:
        found = {k: v.values for k, v in how(work, images, targets).items()}
        return {**found, **{c: CALIBRATIONS.get(c)(images, draw, setup.seed, index=index)
                            for c in comparison.calibration}}

    with console.progress(2, "eMPRT", progress) as bar:
        trained = maps(0)
        bar.advance(1, model="trained")
        for block in traced:
            reinitialise(block, setup.init, seeds[block.name])
        random = maps(1)
        bar.advance(1, model="randomised")
    result = SanityResult("emprt", [ALL_BLOCKS], {}, images=images[:comparison.keep].detach().cpu())
    for name, m in trained.items():
        h_t, h_r = histogram_entropy(m.double(), bins).cpu(), histogram_entropy(random[name].double(), bins).cpu()
        rise = torch.where(h_t > 0, (h_r - h_t) / h_t.clamp_min(1e-300), torch.full_like(h_t, float("nan")))
        result.scores[name] = {ALL_BLOCKS: {"complexity_rise": rise, "entropy_trained": h_t, "entropy_random": h_r}}
    result.maps = {"trained": _kept(trained, comparison.keep), ALL_BLOCKS: _kept(random, comparison.keep)}
    result.meta = {"test": "emprt", "bins": bins, "init": setup.init_name, "seeds": seeds,
                   "blocks": setup.blocks if isinstance(setup.blocks, (str, int)) else list(setup.blocks),
                   "targets": "predicted" if targets is None else "given", "images": int(images.shape[0]),
                   "metrics": ["complexity_rise", "entropy_trained", "entropy_random"],
                   "calibration": list(comparison.calibration), "seconds": time.perf_counter() - started,
                   "how": how.settings()}
    return result


@old_keywords(randomisation=False)
def random_logit(model: nn.Module, images: torch.Tensor, how: How = ("gradcam", "saliency"),
                 targets: TargetSpec = None, other: torch.Tensor | None = None, seed: int = 0,
                 comparison: Comparison | None = None, *, progress: bool = False,
                 index: torch.Tensor | None = None) -> SanityResult:
    """Random-logit test (Sixt et al., ICML 2020): similarity of each image's map for its class
    (`targets`, else the `how`'s; None: the predicted one) and for a random other class (`other` (B,),
    default drawn uniformly among the other classes, image r's from `seed` and `index[r]`). Low similarity
    passes. `comparison`: as in `model_randomization`."""
    how, comparison = as_explainer(how), comparison or Comparison()
    comparison, notes = _metrics(comparison, images)
    _checked(how, comparison)
    started = time.perf_counter()
    device = device_of(model)
    found = _logits(model, images.to(device), how)
    classes = _classes(model, images.to(device), how, targets, found)
    if not isinstance(classes, torch.Tensor):
        raise InputError("the random-logit test needs class targets (None, an int or a LongTensor[B]), not a callable")
    other = _other(found.shape[1], classes, other, seed, index, images.shape[0])
    with console.progress(2, "random-logit", progress) as bar:
        same = {k: v.values for k, v in how(model, images, classes).items()}
        bar.advance(1, classes="explained")
        off = {k: v.values for k, v in how(model, images, other).items()}
        bar.advance(1, classes="random")
    for c in comparison.calibration:
        same[c], off[c] = (CALIBRATIONS.get(c)(images, draw, seed, index=index) for draw in (0, 1))
    keep = comparison.keep
    result = SanityResult("random-logit", [RANDOM_CLASS], {}, images=images[:keep].detach().cpu())
    for name in same:
        result.scores[name] = {RANDOM_CLASS: similarities(same[name], off[name], comparison.metrics)}
    result.maps = {"trained": _kept(same, keep), RANDOM_CLASS: _kept(off, keep)}
    result.meta = {"test": "random-logit", "targets": "predicted" if targets is None and how.targets is None
                   else "given", "other": other.cpu().tolist(), "seed": seed, "metrics": list(comparison.metrics),
                   "notes": notes, "calibration": list(comparison.calibration), "images": int(images.shape[0]),
                   "seconds": time.perf_counter() - started, "how": how.settings()}
    return result


def _other(k: int, classes: torch.Tensor, other: torch.Tensor | None, seed: int, index: torch.Tensor | None,
           b: int) -> torch.Tensor:
    """Another class per image (B,): the given ones checked, or drawn uniformly among the K − 1 other classes."""
    if k < 2:
        raise InputError("the random-logit test needs a model with at least two classes")
    if other is None:
        rows = draws.indices(index, b)  # image r's draw from its own seed (`attnscope.draws`)
        pick = draws.per_image(lambda g: torch.randint(0, k - 1, (), generator=g), seed, rows).to(classes.device)
        other = pick + (pick >= classes).long()  # uniform over the classes other than the explained one
    other = other.to(classes.device)
    if other.shape != classes.shape or bool((other == classes).any()) or bool(((other < 0) | (other >= k)).any()):
        raise InputError(f"other classes must be (B,) in [0, {k}) and differ from the explained class of each image")
    return other


def _logits(model: nn.Module, images: torch.Tensor, how: Explainer) -> torch.Tensor:
    with model_guard(model):
        return logits(model, images, output=how.output)


def _classes(model: nn.Module, images: torch.Tensor, how: Explainer, targets: TargetSpec,
             found: torch.Tensor | None = None) -> TargetSpec:
    """The class of each image: the given targets (else the `how`'s), or (None) the model's prediction."""
    targets = how.targets if targets is None else targets
    if targets is not None:
        if isinstance(targets, int) and not isinstance(targets, bool):
            return torch.full((images.shape[0],), targets, dtype=torch.long, device=images.device)
        return targets.to(images.device) if isinstance(targets, torch.Tensor) else targets
    return (_logits(model, images, how) if found is None else found).argmax(1)
