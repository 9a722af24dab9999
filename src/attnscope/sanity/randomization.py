"""Model parameter and data randomisation tests (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): how similar are a method's maps for the trained model and for a model whose
parameters (or training labels) were randomised? A method that explains the model should change.

Every step explains all requested methods in one `explain` call, so they share their passes.
The tests work on a deep copy: the model passed in is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnscope import console
from attnscope.errors import InputError
from attnscope.explain import Explainer, Layer, LayerSpec, TargetSpec, as_explainer, model_guard, resolve_layer
from attnscope.metrics.similarity import SIMILARITIES, compare, prepare, similarities, too_small
from attnscope.modules import device_of
from attnscope.sanity.blocks import Block, reinitialise, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.result import SanityResult
from attnscope.sanity.reuse import PrefixReuse
from attnscope.sanity.settings import CALIBRATION, ORDERS, Comparison, Randomisation, old_keywords

MODES = ("cascading", "independent")
METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog_pearson", "hog_spearman")
How = Explainer | str | Sequence[str]
__all__ = ["CALIBRATION", "METRICS", "MODES", "ORDERS", "data_randomization", "model_randomization", "randomise"]


@old_keywords()
def model_randomization(
    model: nn.Module,
    images: torch.Tensor,
    how: How = ("gradcam", "saliency"),
    targets: TargetSpec = None,
    mode: str = "cascading",
    randomisation: Randomisation | None = None,
    comparison: Comparison | None = None,
    *,
    progress: bool = False,
    index: torch.Tensor | None = None,
) -> SanityResult:
    """Model parameter randomisation test (Adebayo et al. 2018, §4).

    `how`: how to explain (an `Explainer`, or method names); every step explains all its methods in one
    call. `mode="cascading"`: blocks are re-initialised one more at each step, cumulatively, in the
    `randomisation`'s order (top-down from the logits by default, the paper's); `"independent"`: one block
    at a time, the others trained. Blocks are found in execution order by tracing a forward pass
    (`Randomisation`: which blocks, how they are drawn, from which seeds; the seeds are recorded in
    `meta`). `targets=None` explains each model's own predicted class (as the paper's code does; the
    `how`'s targets if it has some); pass labels to fix the class. Similarities compare every step's maps
    with the trained model's (never the trained model with itself), by the `comparison`'s metrics (None:
    `METRICS` less those undefined at the images' size, each left out with a note in `meta["notes"]`).
    `index`: the images' data-set indices (default 0 … B − 1), which seed each image's calibration draws
    (`attnscope.draws`).
    """
    how, comparison = as_explainer(how), comparison or Comparison()
    comparison, notes = _metrics(comparison, images)
    _checked(how, comparison)
    targets = how.targets if targets is None else targets

    def maps_of(work: nn.Module, layer: LayerSpec) -> dict[str, torch.Tensor]:
        return {k: v.values for k, v in how.replace(layer=layer)(work, images, targets).items()}

    result = randomise(model, images, maps_of, how, mode, randomisation or Randomisation(), comparison,
                       progress=progress, index=index)
    result.meta.update(targets="predicted" if targets is None else "given", notes=[*notes, *result.meta["notes"]],
                       options=how.settings()["options"], how=how.settings())
    return result


MapsOf = Callable[[nn.Module, LayerSpec], dict[str, torch.Tensor]]  # (model at this step, layer) -> maps


def randomise(model: nn.Module, images: torch.Tensor, maps_of: MapsOf, how: Explainer, mode: str = "cascading",
              randomisation: Randomisation | None = None, comparison: Comparison | None = None, *,
              progress: bool = False, test: str | None = None, index: torch.Tensor | None = None) -> SanityResult:
    """The parameter randomisation loop of `model_randomization`, with the maps of each step given by
    `maps_of(model, layer)` (plain maps, or sMPRT's smoothed maps; `how` names the methods and the layer).
    Works on a deep copy. `comparison.metrics` must be resolved (`_metrics`)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    setup, comparison = randomisation or Randomisation(), comparison or Comparison(list(METRICS))
    order = setup.order or "top-down"
    started = time.perf_counter()
    work = copy.deepcopy(model).eval()  # the user's model is never touched
    if setup.channels_last:
        work = work.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    device_images = images.to(device_of(work))
    traced = trace_blocks(work, device_images[:1], setup.blocks)
    steps = traced if order == "bottom-up" and mode == "cascading" else list(reversed(traced))
    seeds = setup.seeds(steps)
    layer = _layer_name(work, images, how.replace(layer=_module_name(model, how.layer)))
    # a bottom-up cascade randomises the first block at its first step: nothing below it to replay
    replay = PrefixReuse(work, device_images) if setup.reuse and not (mode == "cascading" and order == "bottom-up") \
        else None

    def run(lowest: Block | None) -> dict[str, torch.Tensor]:
        if replay is None:
            return maps_of(work, layer)
        with replay.step(math.inf if lowest is None else replay.start_of(lowest.name)):
            return maps_of(work, layer)

    def step_maps(randomised: list[Block], draw: int) -> dict[str, torch.Tensor]:
        lowest = min(randomised, key=lambda b: b.position) if randomised else None
        return {**run(lowest), **_calibration(comparison, images, draw, setup.seed, index)}

    def randomise_step(block: Block, step: int) -> list[Block]:
        reinitialise(block, setup.init, seeds[block.name])
        return [block] if mode == "independent" else steps[:step]

    result, notes = _steps(test or mode, images, steps, how.methods, comparison, step_maps, randomise_step,
                           mode == "independent", progress)
    result.meta = {
        "test": test or mode, "order": order if mode == "cascading" else None, "init": setup.init_name,
        "blocks": setup.blocks if isinstance(setup.blocks, (str, int)) else list(setup.blocks),
        "seeds": seeds, "layer": how.replace(layer=layer).settings()["layer"], "metrics": list(comparison.metrics),
        "calibration": list(comparison.calibration), "images": int(images.shape[0]),
        "channels_last": setup.channels_last,
        "reused": None if replay is None else {"hits": replay.hits, "misses": replay.misses},
        "seconds": time.perf_counter() - started, "notes": notes,
    }
    return result


def _steps(test: str, images: torch.Tensor, steps: list[Block], methods: Sequence[str], comparison: Comparison,
           step_maps: Callable[[list[Block], int], dict[str, torch.Tensor]],
           randomise_step: Callable[[Block, int], list[Block]], independent: bool,
           progress: bool) -> tuple[SanityResult, list[str]]:
    """The trained model's maps, then each step's (`randomise_step` re-initialises a block and says which are
    random), compared with the trained ones; an independent test restores the block before the next."""
    keep, metrics = comparison.keep, comparison.metrics
    reference = step_maps([], 0)
    ref_features = {k: prepare(v, metrics) for k, v in reference.items()}  # once, compared at every step
    result = SanityResult(test, [b.name for b in steps], {k: {} for k in reference},
                          images=images[:keep].detach().cpu())
    result.maps["trained"] = _kept(reference, keep)
    saved: dict[str, Any] = {}
    notes: list[str] = []
    with console.progress(len(steps), f"{test} randomisation", progress) as bar:
        for step, block in enumerate(steps, 1):
            if independent:
                _restore(saved)
                saved = {block.name: (block, copy.deepcopy(block.module.state_dict()))}
            maps = step_maps(randomise_step(block, step), step)
            for name, features in ref_features.items():
                result.scores[name][block.name] = compare(features, prepare(maps[name], metrics))
            notes += [f"{block.name}: every {name} map is constant (the model's output no longer depends on "
                      "the image), so its similarities are undefined (n = 0)" for name in methods
                      if name in maps and _all_constant(maps[name])]
            result.maps[block.name] = _kept(maps, keep)
            bar.advance(1, block=block.name)
    return result, notes


def _calibration(comparison: Comparison, images: torch.Tensor, draw: int, seed: int,
                 index: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The calibration maps of one step (draw `draw` of each image's own generator)."""
    return {c: CALIBRATIONS.get(c)(images, draw, seed, index=index) for c in comparison.calibration}


def _all_constant(maps: torch.Tensor) -> bool:
    """Whether every image's map (B, ...) holds a single value (a rank correlation with it is undefined)."""
    flat = maps.detach().flatten(1)
    return bool((flat.amax(1) == flat.amin(1)).all())


@old_keywords(randomisation=False)
def data_randomization(model: nn.Module, permuted: nn.Module, images: torch.Tensor,
                       how: How = ("gradcam", "saliency"), targets: TargetSpec = None,
                       comparison: Comparison | None = None, info: Mapping[str, Any] | None = None) -> SanityResult:
    """Data randomisation test (Adebayo et al. 2018, §5): maps of `model` (trained on true labels)
    against maps of `permuted`, the same architecture trained on permuted labels until it fits
    them (`attnscope.train.fit_permuted`), both explained as `how` says. `info` (e.g. its train and test
    accuracy) goes into `meta`. `comparison`: as in `model_randomization`.
    """
    how, comparison = as_explainer(how), comparison or Comparison()
    comparison, notes = _metrics(comparison, images)
    _checked(how, comparison)
    targets = how.targets if targets is None else targets
    started = time.perf_counter()
    maps = []
    for m in (model, permuted):
        layer = _layer_name(m, images, how.replace(layer=_module_name(m, how.layer)))
        maps.append({k: v.values for k, v in how.replace(layer=layer)(m, images, targets).items()})
    reference, other = maps
    calib = {c: (CALIBRATIONS.get(c)(images, 0), CALIBRATIONS.get(c)(images, 1)) for c in comparison.calibration}
    step, keep, metrics = "permuted-labels", comparison.keep, comparison.metrics
    result = SanityResult("data", [step], {}, images=images[:keep].detach().cpu())
    for name in reference:
        result.scores[name] = {step: similarities(reference[name], other[name], metrics)}
    for name, (a, b) in calib.items():
        result.scores[name] = {step: similarities(a, b, metrics)}
    result.maps = {"trained": _kept({**reference, **{c: a for c, (a, _) in calib.items()}}, keep),
                   step: _kept({**other, **{c: b for c, (_, b) in calib.items()}}, keep)}
    result.meta = {"test": "data", "targets": "predicted" if targets is None else "given",
                   "metrics": list(metrics), "images": int(images.shape[0]), **dict(info or {}),
                   "seconds": time.perf_counter() - started, "notes": notes, "how": how.settings()}
    return result


def _metrics(comparison: Comparison, images: torch.Tensor) -> tuple[Comparison, list[str]]:
    """The comparison with its metrics resolved, and the notes on defaults left out: asked-for metrics must fit
    the images."""
    size = tuple(images.shape[-2:])
    if comparison.metrics is not None:
        for m in comparison.metrics:
            problem = too_small(m, size)  # an unknown name raises here, listing the known ones
            if problem:
                raise InputError(f"{problem}: leave it out of the metrics (the default leaves it out by itself)")
        return dataclasses.replace(comparison, metrics=list(comparison.metrics)), []
    kept = [m for m in METRICS if too_small(m, size) is None]
    return dataclasses.replace(comparison, metrics=kept), [f"{too_small(m, size)}: left out" for m in METRICS
                                                            if m not in kept]


def _checked(how: Explainer, comparison: Comparison) -> None:
    """Metrics and calibration maps known, none named as a method too (the methods were checked by `how`)."""
    if not comparison.metrics:
        raise InputError("give at least one similarity metric")
    for m in comparison.metrics:
        SIMILARITIES.get(m)
    for c in comparison.calibration:
        CALIBRATIONS.get(c)
        if c in how.methods:
            raise InputError(f"{c!r} is both a method and a calibration map")


def _module_name(model: nn.Module, layer: LayerSpec) -> LayerSpec:
    """A layer given as a module of `model` as its dotted name, which names it in a copy too."""
    if isinstance(layer, Layer) and isinstance(layer.at, nn.Module):
        return dataclasses.replace(layer, at=_module_name(model, layer.at))
    if isinstance(layer, nn.Module):
        return resolve_layer(model, layer, torch.empty(0))[0]
    return layer


def _layer_name(model: nn.Module, images: torch.Tensor, how: Explainer) -> LayerSpec:
    """The chosen layer as a dotted name (in its `Layer` if it came in one), resolved once (in eval mode) for
    every step of a test."""
    if not any(spec.needs & {"layer", "layer_grad"} for spec in how.specs):
        return how.layer
    with model_guard(model):
        name = resolve_layer(model, how.layer, images[:1].to(device_of(model)))[0]
    return dataclasses.replace(how.layer, at=name) if isinstance(how.layer, Layer) else name


def _restore(saved: dict[str, tuple[Block, dict[str, torch.Tensor]]]) -> None:
    for block, state in saved.values():
        block.module.load_state_dict(state)


def _kept(maps: Mapping[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    return {k: v[:keep].detach().float().cpu() for k, v in maps.items()}
