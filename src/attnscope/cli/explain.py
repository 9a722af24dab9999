"""`attnscope explain`: post-hoc maps of a trained model for images; overlays, raw maps, a manifest.

The output folder is built under a temporary name beside `--out` and renamed at the end, so a
failed or interrupted run never leaves a half-written folder (`attnscope.outdir`: an existing `--out`
is replaced only with `--overwrite`, and only if it holds an earlier `attnscope explain` output).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attnscope import fileio
from attnscope.cli import cli
from attnscope.cli.common import (
    Compute,
    How,
    ModelSource,
    Output,
    compute_options,
    explain_options,
    model_options,
    output_options,
)
from attnscope.cli.inputs import ImageChoice, StreamChoice, images_options, stream_options, world_of
from attnscope.cli.texts import Prompts, split_by_text, text_options, write_tokens
from attnscope.errors import InputError

if TYPE_CHECKING:  # torch (and what imports it) load inside the command, so that --help answers at once
    import torch

    from attnscope.data.inputs import Inputs

MANIFEST = "manifest.json"


@cli.command("explain")
@model_options()
@images_options(required=True, n=16, data_seed=0)
@click.option("--normalize", type=click.Choice(["none", "imagenet"]), default="none", show_default=True,
              help="Input normalisation the model expects (overlays show the images as read).")
@explain_options(methods="gradcam", targets="predicted", batch_size=16)
@text_options()
@click.option("--format", "fmt", type=click.Choice(["safetensors", "npy"]), default="safetensors",
              show_default=True, help="File format of the raw maps.")
@output_options("explain")
@compute_options()
@stream_options("Stream all of --images (a folder, or --n of a data set) into safetensors shards + manifest.json, "
                "no overlays; resumable; under torchrun split across the processes.")
def explain_command(source: ModelSource, images: ImageChoice, normalize: str, how: How, prompts: Prompts, fmt: str,
                    output: Output, compute: Compute, streaming: StreamChoice) -> None:
    """Explain images with post-hoc methods; write overlays (PNG) on the original photos, raw maps and
    manifest.json. Photos of different sizes need --resize (with --crop or --pad) or --size."""
    started = time.perf_counter()  # (the methods, their options and the layer were checked: `explain_options`)
    if streaming.on and fmt != "safetensors":
        raise InputError("--stream writes safetensors shards; --format npy is for the in-memory run")
    if not streaming.on:
        output.check()
    from attnscope.explain.targets import named_choice
    from attnscope.models import class_names, normalized

    model, info = source.load()
    warnings = _random_weights_warning(info)  # said once the maps exist: an error stays the one line
    if getattr(model, "attention_kind", None) == "sat":  # a captioner has no classes to explain
        raise InputError(f"{source.source} is a captioning model: use `attnscope caption --checkpoint "
                         f"{source.source}`")
    text = prompts.target(info, alone=not streaming.on and how.targets == "predicted")
    model = normalized(model, normalize).to(compute.torch_device())  # the weights' input convention inside it
    names = class_names(model)
    how = dataclasses.replace(how, targets=named_choice(how.targets, names))  # a class name: its index, or refused
    data = images.dataset(16)
    if streaming.on:
        return _stream(model, source, images, data, normalize, how, output, compute, streaming)
    from attnscope.data.inputs import read_all

    inputs = read_all(data)
    targets = text if text is not None else how.targets_for(inputs.labels)
    with output.building() as partial:
        maps, probs = _explain(model, inputs.images, how, targets, compute.quiet)
        if text is not None:  # one map per image and prompt; `probs` are over the prompts (no class names)
            maps = split_by_text(maps, list(text.texts))
            names = None
        for line in warnings:
            click.echo(f"warning: {line}", err=True)
        files = _write(partial, inputs, maps, fmt, None if text is not None else probs, names)
        manifest = _manifest(source.source, info, inputs, probs, maps, files, normalize, fmt,
                             time.perf_counter() - started, names)
        manifest["warnings"] = warnings
        if text is not None:  # the prompts, and each prompt token's relevance
            manifest |= write_tokens(partial, model, inputs.images, text, prompts.token_methods, inputs.sources)
        manifest["resize"] = images.fit_dict
        fileio.write_json(partial / MANIFEST, manifest)
    click.echo(f"explained {len(inputs.images)} images with {', '.join(maps)} → {output.path}/ "
               f"({files['maps'] if fmt == 'safetensors' else 'maps/'}, overlays/, grid.png, {MANIFEST})")


def _stream(model, source: ModelSource, images: ImageChoice, data, normalize: str, how: How, output: Output,
            compute: Compute, streaming: StreamChoice) -> None:
    """The same body shard by shard: `--images` through the model into the shards of `--out` (every process of
    torchrun calls it); resumable, the settings compared with run.json."""
    from attnscope.stream import explain_dataset

    settings = {"checkpoint": source.source, "weights": source.weights, "model_opts": list(source.given),
                "images": images.source, "n": images.n, "data_seed": images.data_seed, "fit": images.fit_dict,
                "normalize": normalize}
    for key in ("num_classes", "classes"):  # recorded only when given: a run of the previous version resumes
        if getattr(source, key) is not None:
            settings[key] = getattr(source, key)
    targets = "pred" if how.targets == "predicted" else how.targets  # the library's (and run.json's) spelling
    with world_of(model) as world:
        manifest = explain_dataset(model, data, output.path, how.explainer(), targets=targets, settings=settings,
                                   streaming=streaming.streaming(output.overwrite, compute.progress))
    if world.main:
        click.echo(f"explained {manifest['total']} images with {', '.join(how.methods)} → {output.path}/ "
                   f"({len(manifest['shards'])} shards in maps/, manifest.json)")


def _random_weights_warning(info: dict[str, Any]) -> list[str]:
    source = info.get("source") or {}
    if not source.get("random_weights"):
        return []
    return [f"{source.get('name')} has random weights (no --weights given): the maps explain an untrained network"]


def _explain(model, x: torch.Tensor, how: How, targets: Any, quiet: bool):
    """Maps of every method, batch by batch (methods of one batch share their passes), on the CPU, and the
    model's class probabilities (B, classes) from the shared pass."""
    import torch

    from attnscope import console
    from attnscope.maps import AttentionMap
    from attnscope.modules import device_of
    from attnscope.report.labels import probabilities

    device, explainer = device_of(model), how.explainer()
    chunks: dict[str, list[AttentionMap]] = {}
    probs = []
    size = how.batch_size or len(x)
    starts = range(0, len(x), size)
    with console.progress(len(starts), "explain", enabled=not quiet) as bar:
        for i in starts:
            batch = x[i : i + size].to(device)
            t = targets[i : i + size] if isinstance(targets, torch.Tensor) else targets
            maps = explainer(model, batch, t)
            for name, amap in maps.items():
                chunks.setdefault(name, []).append(amap.cpu())
            probs.append(probabilities(maps.logits))  # from the shared pass: no forward of its own
            bar.advance(1, images=min(i + size, len(x)))
    return {k: AttentionMap.cat(v) for k, v in chunks.items()}, torch.cat(probs)


def _write(folder: Path, inputs: Inputs, maps: dict, fmt: str, probs: torch.Tensor | None,
           names: Sequence[str] | None) -> dict[str, Any]:
    """Raw maps, one overlay PNG per image and method (on the original photo), and a grid of the model's
    inputs, its rows labelled by class (image, explained class, p, true and predicted class) where `probs` are
    the model's class probabilities; returns what was written where."""
    from attnscope.explain import method_spec
    from attnscope.report import figures
    from attnscope.report.labels import row_labels
    from attnscope.report.overlays import write_overlays

    images, sources = inputs.images, inputs.sources

    tensors = {name: m.values for name, m in maps.items()}
    tensors |= {f"{name}.lowres": m.lowres for name, m in maps.items() if m.lowres is not None}
    tensors |= {f"{name}.targets": m.targets for name, m in maps.items()}
    if fmt == "safetensors":
        fileio.save_tensors(folder / "maps.safetensors", tensors, {"images": [s["name"] for s in sources]})
        files: dict[str, Any] = {"maps": "maps.safetensors"}
    else:
        for key, t in tensors.items():
            fileio.write_with(folder / "maps" / f"{key}.npy", lambda tmp, t=t: _save_npy(tmp, t.numpy()))
        files = {"maps": {key: f"maps/{key}.npy" for key in tensors}}
    files["overlays"] = write_overlays(folder, inputs, maps)
    rows = min(len(images), 16)
    kinds = {k: method_spec(k.split("/")[0]).kind for k in maps}
    labels = None if probs is None else row_labels(
        next(iter(maps.values())).targets[:rows], names, probs[:rows],
        None if inputs.labels is None else inputs.labels[:rows], [s["name"] for s in sources[:rows]])
    figures.save_png(folder / "grid.png", figures.grid(images[:rows], {k: m.values[:rows] for k, m in maps.items()},
                                                       kinds=kinds, options={k: m.meta for k, m in maps.items()},
                                                       rows=labels))
    files["grid"] = "grid.png"
    return files


def _save_npy(path: Path, array) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array)


def _manifest(checkpoint: str, info: dict[str, Any], inputs: Inputs, probs: torch.Tensor, maps: dict,
              files: dict[str, Any], normalize: str, fmt: str, seconds: float,
              names: Sequence[str] | None = None) -> dict[str, Any]:
    """What was explained how, image by image: classes as indices with the model's probability, and by name
    where the model has names (with each map's flags, said on the terminal too)."""
    from attnscope import __version__
    from attnscope.explain import method_spec
    from attnscope.report.overlays import flag_maps

    kinds = {name: method_spec(name.split("/")[0]).kind for name in maps}
    flagged = flag_maps(maps, inputs.sources, kinds)
    images = []
    for i, source in enumerate(inputs.sources):
        top = int(probs[i].argmax())
        entry = {**source, "predicted": top, "p_predicted": _p(probs[i, top])}
        if inputs.labels is not None:
            entry["label"] = int(inputs.labels[i])
        targets = {name: int(m.targets[i]) for name, m in maps.items()}
        entry["targets"] = targets
        entry["p_targets"] = {name: _p(probs[i, t]) for name, t in targets.items() if 0 <= t < probs.shape[1]}
        if names is not None:
            entry["predicted_name"] = names[top]
            if inputs.labels is not None and 0 <= int(inputs.labels[i]) < len(names):
                entry["label_name"] = names[int(inputs.labels[i])]
            entry["target_names"] = {name: names[t] for name, t in targets.items() if 0 <= t < len(names)}
        if inputs.placements is not None:
            entry["geometry"] = inputs.placements[i].to_dict()
        images.append(entry)
    methods = {name: {"kind": kinds[name], "layer": m.layer, "layer_choice": m.meta.get("layer_choice"),
                      "options": {k: v for k, v in m.meta.items() if k != "layer_choice"},
                      "shape": list(m.values.shape), "lowres_shape": None if m.lowres is None else list(m.lowres.shape),
                      "flags": flagged[name]}
               for name, m in maps.items()}
    return {"attnscope": __version__, "command": "explain", "checkpoint": checkpoint, "model": info.get("model"),
            "source": info.get("source"), "normalize": normalize, "format": fmt, "methods": methods,
            "images": images, "files": files, "seconds": round(seconds, 2)}


def _p(p: torch.Tensor) -> float:
    """A probability to 4 significant digits (a weak class keeps its size: 3.2e-06, not 0.0)."""
    return float(f"{float(p):.4g}")
