"""Model parameter and data randomisation tests (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): how similar are a method's maps for the trained model and for a model whose
parameters (or training labels) were randomised? A method that explains the model should change.

Every step explains all requested methods in one `explain` call, so they share their passes.
The tests work on a deep copy: the model passed in is never changed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnscope import console
from attnscope.errors import InputError
from attnscope.explain import explain
from attnscope.explain.layers import LayerSpec, resolve_layer
from attnscope.explain.targets import TargetSpec
from attnscope.metrics.similarity import SIMILARITIES, compare, prepare, similarities, too_small
from attnscope.modules import device_of
from attnscope.registry import METHODS
from attnscope.sanity.blocks import INITS, Block, Granularity, Init, reinitialise, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.result import SanityResult
from attnscope.sanity.reuse import PrefixReuse

MODES = ("cascading", "independent")
ORDERS = ("top-down", "bottom-up")
METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog_pearson", "hog_spearman")
CALIBRATION = ("random", "sobel")
Options = Mapping[str, Mapping[str, Any]] | None


def model_randomization(
    model: nn.Module,
    images: torch.Tensor,
    methods: Sequence[str] = ("gradcam", "saliency"),
    targets: TargetSpec = None,
    mode: str = "cascading",
    blocks: Granularity = "layer",
    init: str | Init = "default",
    seed: int = 0,
    block_seed: Callable[[int, str], int] | None = None,
    metrics: Sequence[str] | None = None,
    calibration: Sequence[str] = CALIBRATION,
    layer: LayerSpec = "auto",
    options: Options = None,
    batch_size: int | None = None,
    keep: int = 4,
    progress: bool = False,
    channels_last: bool = False,
    order: str = "top-down",
    reuse: bool = True,
    index: torch.Tensor | None = None,
) -> SanityResult:
    """Model parameter randomisation test (Adebayo et al. 2018, §4).

    `mode="cascading"`: blocks are re-initialised one more at each step, cumulatively, `order`
    "top-down" from the logits (the paper's) or "bottom-up" from the input; `"independent"`: one
    block at a time, the others trained. Blocks are found in
    execution order by tracing a forward pass (`blocks`: "layer", a name depth or names, see
    `sanity.blocks`). `init`: "default" (each module's `reset_parameters`), "trunc-normal"
    (σ = 0.01) or a function of a block's (name, module) parts; normalisation layers go back to
    identity with fresh running statistics. The block
    at execution position i is drawn from `torch.manual_seed(block_seed(i, name))`, by default
    `seed + i`; the seeds are recorded in `meta`. `targets=None` explains each model's own predicted
    class (as the paper's code does); pass labels to fix the class. Similarities compare every
    step's maps with the trained model's (never the trained model with itself). `keep`: images whose
    maps are kept for drawing. `metrics=None`: `METRICS` less those undefined at the images' size
    (HOG under 48 px, SSIM under 11 px), each left out with a note in `meta["notes"]`.
    `channels_last=True` runs the (copied) model and images in NHWC memory layout: the same maps up to
    float rounding, often faster on CPUs (1.5× for SmallCNN), not always.
    `reuse=True` replays the outputs of the modules below the lowest randomised block instead of
    recomputing them at every step (`sanity.reuse`): the same maps, fewer passes. `index`: the images'
    data-set indices (default 0 … B − 1), which seed each image's calibration draws (`attnscope.draws`).
    """
    metrics, notes = _metrics(metrics, images)
    methods = _checked(methods, metrics, calibration)

    def maps_of(work: nn.Module, layer_name: LayerSpec) -> dict[str, torch.Tensor]:
        found = explain(work, images, methods, targets, layer_name, options, batch_size)
        return {k: v.values for k, v in found.items()}

    result = randomise(model, images, maps_of, methods, mode, order, blocks, init, seed, block_seed, metrics,
                       calibration, layer, keep, progress, channels_last, reuse, index=index)
    result.meta.update(targets="predicted" if targets is None else "given", notes=[*notes, *result.meta["notes"]],
                       options={k: dict(v) for k, v in (options or {}).items()})
    return result


MapsOf = Callable[[nn.Module, LayerSpec], dict[str, torch.Tensor]]  # (model at this step, layer) -> maps


def randomise(model: nn.Module, images: torch.Tensor, maps_of: MapsOf, methods: Sequence[str], mode: str = "cascading",
              order: str = "top-down", blocks: Granularity = "layer", init: str | Init = "default", seed: int = 0,
              block_seed: Callable[[int, str], int] | None = None, metrics: Sequence[str] = METRICS,
              calibration: Sequence[str] = CALIBRATION, layer: LayerSpec = "auto", keep: int = 4,
              progress: bool = False, channels_last: bool = False, reuse: bool = True,
              test: str | None = None, index: torch.Tensor | None = None) -> SanityResult:
    """The parameter randomisation loop of `model_randomization`, with the maps of each step given by
    `maps_of(model, layer)` (plain maps, or sMPRT's smoothed maps). Works on a deep copy."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(init, str):
        INITS.get(init)
    started = time.perf_counter()
    layer = _module_name(model, layer)
    work = copy.deepcopy(model).eval()  # the user's model is never touched
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    device_images = images.to(device_of(work))
    traced = trace_blocks(work, device_images[:1], blocks)
    steps = traced if order == "bottom-up" and mode == "cascading" else list(reversed(traced))
    seeds = {b.name: int(block_seed(b.position, b.name)) if block_seed else seed + b.position for b in steps}
    layer = _layer_name(work, images, methods, layer)
    # a bottom-up cascade randomises the first block at its first step: nothing below it to replay
    replay = PrefixReuse(work, device_images) if reuse and not (mode == "cascading" and order == "bottom-up") else None

    def run(lowest: Block | None) -> dict[str, torch.Tensor]:
        if replay is None:
            return maps_of(work, layer)
        with replay.step(math.inf if lowest is None else replay.start_of(lowest.name)):
            return maps_of(work, layer)

    reference = {**run(None), **{c: CALIBRATIONS.get(c)(images, 0, seed, index=index) for c in calibration}}
    ref_features = {k: prepare(v, metrics) for k, v in reference.items()}  # once, compared at every step
    result = SanityResult(test or mode, [b.name for b in steps], {k: {} for k in reference},
                          images=images[:keep].detach().cpu())
    result.maps["trained"] = _kept(reference, keep)
    saved: dict[str, Any] = {}
    notes: list[str] = []
    with console.progress(len(steps), f"{test or mode} randomisation", progress) as bar:
        for step, block in enumerate(steps, 1):
            if mode == "independent":
                _restore(saved)
                saved = {block.name: (block, copy.deepcopy(block.module.state_dict()))}
            reinitialise(block, init, seeds[block.name])
            randomised = [block] if mode == "independent" else steps[:step]
            maps = {**run(min(randomised, key=lambda b: b.position)),
                    **{c: CALIBRATIONS.get(c)(images, step, seed, index=index) for c in calibration}}
            for name, features in ref_features.items():
                result.scores[name][block.name] = compare(features, prepare(maps[name], metrics))
            notes += [f"{block.name}: every {name} map is constant (the model's output no longer depends on "
                      "the image), so its similarities are undefined (n = 0)" for name in methods
                      if _all_constant(maps[name])]
            result.maps[block.name] = _kept(maps, keep)
            bar.advance(1, block=block.name)
    result.meta = {
        "test": test or mode, "order": order if mode == "cascading" else None,
        "init": init if isinstance(init, str) else getattr(init, "__name__", repr(init)),
        "blocks": blocks if isinstance(blocks, (str, int)) else list(blocks),
        "seeds": seeds, "layer": layer, "metrics": list(metrics), "calibration": list(calibration),
        "images": int(images.shape[0]), "channels_last": channels_last,
        "reused": None if replay is None else {"hits": replay.hits, "misses": replay.misses},
        "seconds": time.perf_counter() - started, "notes": notes,
    }
    return result


def _all_constant(maps: torch.Tensor) -> bool:
    """Whether every image's map (B, ...) holds a single value (a rank correlation with it is undefined)."""
    flat = maps.detach().flatten(1)
    return bool((flat.amax(1) == flat.amin(1)).all())


def data_randomization(
    model: nn.Module,
    permuted: nn.Module,
    images: torch.Tensor,
    methods: Sequence[str] = ("gradcam", "saliency"),
    targets: TargetSpec = None,
    metrics: Sequence[str] | None = None,
    calibration: Sequence[str] = CALIBRATION,
    layer: LayerSpec = "auto",
    options: Options = None,
    batch_size: int | None = None,
    keep: int = 4,
    info: Mapping[str, Any] | None = None,
) -> SanityResult:
    """Data randomisation test (Adebayo et al. 2018, §5): maps of `model` (trained on true labels)
    against maps of `permuted`, the same architecture trained on permuted labels until it fits
    them (`attnscope.train.fit_permuted`). `info` (e.g. its train and test accuracy) goes into `meta`.
    `metrics=None`: as in `model_randomization`.
    """
    metrics, notes = _metrics(metrics, images)
    methods = _checked(methods, metrics, calibration)
    started = time.perf_counter()
    maps = []
    for m in (model, permuted):
        name = _layer_name(m, images, methods, _module_name(m, layer))
        maps.append({k: v.values for k, v in explain(m, images, methods, targets, name, options, batch_size).items()})
    reference, other = maps
    calib = {c: (CALIBRATIONS.get(c)(images, 0), CALIBRATIONS.get(c)(images, 1)) for c in calibration}
    step = "permuted-labels"
    result = SanityResult("data", [step], {}, images=images[:keep].detach().cpu())
    for name in reference:
        result.scores[name] = {step: similarities(reference[name], other[name], metrics)}
    for name, (a, b) in calib.items():
        result.scores[name] = {step: similarities(a, b, metrics)}
    result.maps = {"trained": _kept({**reference, **{c: a for c, (a, _) in calib.items()}}, keep),
                   step: _kept({**other, **{c: b for c, (_, b) in calib.items()}}, keep)}
    result.meta = {"test": "data", "targets": "predicted" if targets is None else "given",
                   "metrics": list(metrics), "images": int(images.shape[0]), **dict(info or {}),
                   "seconds": time.perf_counter() - started, "notes": notes}
    return result


def _metrics(metrics: Sequence[str] | None, images: torch.Tensor) -> tuple[list[str], list[str]]:
    """The metrics to compute and the notes on defaults left out: asked-for metrics must fit the images."""
    size = tuple(images.shape[-2:])
    if metrics is not None:
        for m in metrics:
            problem = too_small(m, size)  # an unknown name raises here, listing the known ones
            if problem:
                raise InputError(f"{problem}: leave it out of the metrics (the default leaves it out by itself)")
        return list(metrics), []
    kept = [m for m in METRICS if too_small(m, size) is None]
    return kept, [f"{too_small(m, size)}: left out" for m in METRICS if m not in kept]


def _checked(methods: Sequence[str] | str, metrics: Sequence[str], calibration: Sequence[str]) -> tuple[str, ...]:
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise InputError("give at least one method to test")
    for m in methods:
        METHODS.get(m)
    if not metrics:
        raise InputError("give at least one similarity metric")
    for m in metrics:
        SIMILARITIES.get(m)
    for c in calibration:
        CALIBRATIONS.get(c)
        if c in methods:
            raise InputError(f"{c!r} is both a method and a calibration map")
    return methods


def _module_name(model: nn.Module, layer: LayerSpec) -> LayerSpec:
    """A layer given as a module of `model` as its dotted name, which names it in a copy too."""
    if isinstance(layer, nn.Module):
        return resolve_layer(model, layer, torch.empty(0))[0]
    return layer


def _layer_name(model: nn.Module, images: torch.Tensor, methods: Sequence[str], layer: LayerSpec) -> LayerSpec:
    """The chosen layer as a dotted name, resolved once (in eval mode) for every step of a test."""
    if not any(METHODS.get(m).needs & {"layer", "layer_grad"} for m in methods):
        return layer
    from attnscope.explain.engine import model_guard

    with model_guard(model):
        return resolve_layer(model, layer, images[:1].to(device_of(model)))[0]


def _restore(saved: dict[str, tuple[Block, dict[str, torch.Tensor]]]) -> None:
    for block, state in saved.values():
        block.module.load_state_dict(state)


def _kept(maps: Mapping[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    return {k: v[:keep].detach().float().cpu() for k, v in maps.items()}
