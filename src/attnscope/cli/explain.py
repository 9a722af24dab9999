"""`attnscope explain`: post-hoc maps of a trained model for images; overlays, raw maps, a manifest.

The output folder is built under a temporary name beside `--out` and renamed at the end, so a
failed or interrupted run never leaves a half-written folder (`attnscope.outdir`: an existing `--out`
is replaced only with `--overwrite`, and only if it holds an earlier `attnscope explain` output).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attnscope import outdir
from attnscope.cli import cli
from attnscope.cli.options import load_model, parse_fit, parse_list
from attnscope.errors import InputError

if TYPE_CHECKING:  # torch (and what imports it) load inside the command, so that --help answers at once
    import torch

    from attnscope.cli.images import Inputs

MANIFEST = "manifest.json"


@cli.command("explain")
@click.option("--checkpoint", "--model", "checkpoint", required=True, metavar="SOURCE",
              help="Run folder or checkpoint file; a registered name (efficientnet_lite0, smallcnn); any "
                   "torchvision classifier (swin_t); timm:NAME; or module.path:factory for your own code.")
@click.option("--weights", default=None, help="Local weights file (.safetensors, or .pt/.pth read with "
                                              "weights_only) for a model given by name.")
@click.option("--num-classes", default=None, type=int, help="Classes of a model given by name (default: read "
                                                            "from the weights' head).")
@click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
              help="A keyword argument of the model's builder or factory, e.g. depth=2 (values as JSON).")
@click.option("--images", required=True, metavar="DIR|FILE|DATA",
              help="A folder of images, one image, or a built-in data set (clutter, clutter-decoy).")
@click.option("--n", "--n-images", "n", default=16, show_default=True, type=int,
              help="Images taken from a built-in data set (--n-images under torchrun, whose parser claims --n).")
@click.option("--data-seed", default=0, show_default=True, type=int, help="Seed of a built-in data set.")
@click.option("--size", default=None, metavar="S|H,W", help="Squash images to S×S or H×W (aspect ratio lost).")
@click.option("--resize", default=None, metavar="shorter=S|longer=S|H,W",
              help="Resize keeping the aspect ratio: the shorter (or longer) side to S; H,W squashes.")
@click.option("--crop", default=None, metavar="center[=S|H,W]",
              help="Centre crop after --resize (default S×S with shorter=S), as torchvision's CenterCrop.")
@click.option("--pad", is_flag=True, help="Zero pad to S×S after --resize longer=S (keeps the whole photo).")
@click.option("--normalize", type=click.Choice(["none", "imagenet"]), default="none", show_default=True,
              help="Input normalisation the model expects (overlays show the images as read).")
@click.option("--methods", default="gradcam", show_default=True, help="Comma-separated method names.")
@click.option("--targets", default="pred", show_default=True,
              help="pred (the predicted class), label (built-in data), or a class index.")
@click.option("--layer", default="auto", show_default=True, help="Layer of the CAM methods (a dotted name).")
@click.option("--option", "method_opts", multiple=True, metavar="METHOD.KEY=VALUE",
              help="A method option, e.g. ig.steps=64 or gradcam.relu=false.")
@click.option("--batch-size", default=16, show_default=True, type=int, help="Images explained per call.")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "npy"]), default="safetensors",
              show_default=True, help="File format of the raw maps.")
@click.option("--out", required=True, help="Folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier `attnscope explain` output.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--stream", is_flag=True, help="Stream all of --images (a folder, or --n of a data set) into "
                                             "safetensors shards + manifest.json, no overlays; resumable; "
                                             "under torchrun split across the processes.")
@click.option("--shard-size", default=64, show_default=True, type=int, help="Images per shard file (--stream).")
@click.option("--workers", default=0, show_default=True, type=int, help="DataLoader workers reading images "
                                                                         "(--stream).")
@click.option("--resume", is_flag=True, help="Continue an interrupted --stream run in --out (same command).")
def explain_command(checkpoint, weights, num_classes, model_opts, images, n, data_seed, size, resize, crop, pad,
                    normalize, methods, targets, layer, method_opts, batch_size, fmt, out, overwrite, device,
                    quiet, stream, shard_size, workers, resume) -> None:
    """Explain images with post-hoc methods; write overlays (PNG) on the original photos, raw maps and
    manifest.json. Photos of different sizes need --resize (with --crop or --pad) or --size."""
    from attnscope.explain import method_spec  # (registers the methods)

    started = time.perf_counter()
    names = parse_list(methods, "--methods")
    for name in names:
        method_spec(name)  # unknown names (and WRAPPER:METHOD parts) fail before any work, listing close ones
    options = _method_options(method_opts, names)
    fit = parse_fit(resize, crop, pad, size)
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    stream = stream or resume
    if stream and fmt != "safetensors":
        raise InputError("--stream writes safetensors shards; --format npy is for the in-memory run")
    if shard_size < 1 or workers < 0:
        raise InputError(f"--shard-size must be >= 1 and --workers >= 0, got {shard_size} and {workers}")
    out = Path(out)
    if not stream:
        outdir.check(out, "explain", overwrite)
    from attnscope.cli.options import parse_settings
    from attnscope.models import normalized

    model, info = load_model(checkpoint, weights, num_classes, parse_settings(model_opts, "--model-opt"))
    warnings = _random_weights_warning(info)  # said once the maps exist: an error stays the one line
    if getattr(model, "attention_kind", None) == "sat":  # a captioner has no classes to explain
        raise InputError(f"{checkpoint} is a captioning model: use `attnscope caption --checkpoint {checkpoint}`")
    model = normalized(model, normalize).to(_device(device))  # the weights' input convention inside the model
    if stream:
        from attnscope.cli.explain_stream import run_stream

        settings = {"checkpoint": checkpoint, "weights": weights, "model_opts": list(model_opts), "images": images,
                    "n": n, "data_seed": data_seed, "fit": None if fit is None else fit.to_dict(),
                    "normalize": normalize}
        return run_stream(model, info, settings, images, n, data_seed, fit, names, targets, layer, options,
                          batch_size, shard_size, workers, normalize, str(out), overwrite, resume, quiet)
    from attnscope.cli.images import flag_maps, read_inputs

    inputs = read_inputs(images, n, data_seed, fit)
    x, sources, labels = inputs.images, inputs.sources, inputs.labels
    target_spec = _targets(targets, labels)

    from attnscope import fileio

    with outdir.building(out, "explain", overwrite) as partial:
        maps, predicted = _explain(model, x, names, target_spec, layer, options, batch_size, normalize, quiet)
        for line in warnings:
            click.echo(f"warning: {line}", err=True)
        flagged = flag_maps(maps, sources, {k: method_spec(k.split("/")[0]).kind for k in maps})
        files = _write(partial, inputs, maps, fmt)
        manifest = _manifest(checkpoint, info, sources, labels, predicted, maps, files, normalize, fmt,
                             time.perf_counter() - started)
        manifest["warnings"] = warnings
        manifest["resize"] = None if fit is None else fit.to_dict()
        for name, found in flagged.items():
            manifest["methods"][name]["flags"] = found
        if inputs.placements is not None:
            for entry, placement in zip(manifest["images"], inputs.placements, strict=True):
                entry["geometry"] = placement.to_dict()
        fileio.write_json(partial / MANIFEST, manifest)
    click.echo(f"explained {len(x)} images with {', '.join(maps)} → {out}/ "
               f"({files['maps'] if fmt == 'safetensors' else 'maps/'}, overlays/, grid.png, {MANIFEST})")


def _random_weights_warning(info: dict[str, Any]) -> list[str]:
    source = info.get("source") or {}
    if not source.get("random_weights"):
        return []
    return [f"{source.get('name')} has random weights (no --weights given): the maps explain an untrained network"]


def _method_options(items: tuple[str, ...], names: list[str]) -> dict[str, dict[str, Any]]:
    """`("ig.steps=64",)` → `{"ig": {"steps": 64}}`; the method must be among those asked for."""
    from attnscope.cli.options import method_options

    out = method_options(items, "--option", "METHOD.KEY=VALUE")
    for method, opts in out.items():
        if method not in names:
            raise InputError(f"--option {method}.{next(iter(opts))}: {method!r} is not among --methods "
                             f"({', '.join(names)})")
    return out


def _device(spec: str) -> torch.device:
    import torch

    from attnscope.train.distributed import pick_device

    try:
        device = pick_device(spec)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"--device {spec!r} is not usable here: {str(e).splitlines()[0]}") from None
    return device


def _targets(spec: str, labels: torch.Tensor | None):
    if spec == "pred":
        return None
    if spec == "label":
        if labels is None:
            raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
        return labels
    try:
        return int(spec)
    except ValueError:
        raise InputError(f"--targets must be pred, label or a class index, got {spec!r}") from None


def _explain(model, x, names, targets, layer, options, batch_size, normalize, quiet):
    """Maps of every method, batch by batch (methods of one batch share their passes), on the CPU."""
    import torch

    from attnscope import console
    from attnscope.explain import explain
    from attnscope.maps import AttentionMap
    from attnscope.modules import device_of

    device = device_of(model)
    chunks: dict[str, list[AttentionMap]] = {}
    predicted = []
    starts = range(0, len(x), batch_size)
    with console.progress(len(starts), "explain", enabled=not quiet) as bar:
        for i in starts:
            batch = x[i : i + batch_size].to(device)
            t = targets[i : i + batch_size] if isinstance(targets, torch.Tensor) else targets
            maps = explain(model, batch, names, t, layer, options)
            for name, amap in maps.items():
                chunks.setdefault(name, []).append(amap.cpu())
            predicted.append(maps.predicted.cpu())  # from the shared pass: no forward of its own
            bar.advance(1, images=min(i + batch_size, len(x)))
    return {k: AttentionMap.cat(v) for k, v in chunks.items()}, torch.cat(predicted)


def _write(folder: Path, inputs: Inputs, maps: dict, fmt: str) -> dict[str, Any]:
    """Raw maps, one overlay PNG per image and method (on the original photo), and a grid of the model's
    inputs; returns what was written where."""
    from attnscope import fileio
    from attnscope.cli.images import write_overlays
    from attnscope.explain import method_spec
    from attnscope.report import figures

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
    figures.save_png(folder / "grid.png", figures.grid(images[:rows], {k: m.values[:rows] for k, m in maps.items()},
                                                       kinds=kinds, options={k: m.meta for k, m in maps.items()}))
    files["grid"] = "grid.png"
    return files


def _save_npy(path: Path, array) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array)


def _manifest(checkpoint, info, sources, labels, predicted, maps, files, normalize, fmt, seconds) -> dict[str, Any]:
    from attnscope import __version__
    from attnscope.explain import method_spec

    images = []
    for i, source in enumerate(sources):
        entry = {**source, "predicted": int(predicted[i])}
        if labels is not None:
            entry["label"] = int(labels[i])
        entry["targets"] = {name: int(m.targets[i]) for name, m in maps.items()}
        images.append(entry)
    return {
        "attnscope": __version__,
        "command": "explain",
        "checkpoint": checkpoint,
        "model": info.get("model"),
        "source": info.get("source"),
        "normalize": normalize,
        "format": fmt,
        "methods": {
            name: {"kind": method_spec(name.split("/")[0]).kind, "layer": m.layer, "options": m.meta,
                   "shape": list(m.values.shape), "lowres_shape": None if m.lowres is None else list(m.lowres.shape)}
            for name, m in maps.items()
        },
        "images": images,
        "files": files,
        "seconds": round(seconds, 2),
    }
