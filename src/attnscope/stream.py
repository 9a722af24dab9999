"""Explaining a whole data set: images streamed through a DataLoader, maps written shard by shard,
resumable after a crash, split across the processes of `torchrun`.

An output folder (`--out`) of a streamed run holds

    run.json                   the settings of the run and its size: total images, shard size, shards
    maps/shard-00000.safetensors  one file per shard of `shard_size` consecutive images: `index` (n,),
                               `predicted` (n,), `target` (n,) and one (n, H, W) map per method
    manifest.json              written last: methods, images, and every shard (file, first, count)
    .attnscope-output.json     the marker (`attnscope.outdir`); "partial" and "resumable" until the end

A shard file appears only complete (written beside and renamed), so after a kill the shards there are
exactly the finished ones: `resume=True` checks the settings against run.json, removes the temporary
file of the shard being written when the run died (it lies in the run's own `maps/`), and computes the
missing shards. Memory holds one shard's images and maps at a time. Under `torchrun` rank r computes
shards r, r + N, r + 2N ...; rank 0 holds the output's lock, checks and prepares the folder, and merges
the shard lists of all ranks into the manifest. Maps are computed by `explain()` exactly as in one
process, so the files are the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from attnscope import fileio, outdir
from attnscope.errors import DataError, InputError

COMMAND = "explain"
RUN, MANIFEST, MAPS = "run.json", "manifest.json", "maps"
STREAM_FORMAT = "attnscope-stream/1"
_TMP = re.compile(r"\.shard-\d{5}\.safetensors\.[a-z0-9_]+\.tmp")  # fileio.atomic_path's names in maps/


class FolderImages(Dataset):
    """Image files read one at a time (3, H, W) in [0, 1], fitted by `fit` (a `data.geometry.Fit`); label −1."""

    def __init__(self, paths: Sequence[Path], fit: Any = None) -> None:
        self.paths, self.fit = list(paths), fit
        if fit is None:  # one input size: checked on the headers before anything runs
            from PIL import Image

            from attnscope.data.folder import same_size

            shapes: dict[tuple[int, int], Path] = {}
            for p in self.paths:
                with Image.open(p) as im:
                    shapes.setdefault((im.height, im.width), p)
            same_size(shapes, hint="pass --resize (with --crop or --pad) or --size")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from attnscope.data import read_image

        photo = read_image(self.paths[i])
        if self.fit is not None:
            photo = self.fit.place(photo.shape[-2], photo.shape[-1], self.paths[i].stem).apply(photo).clamp(0, 1)
        return photo, -1

    def source(self, i: int) -> dict[str, Any]:
        return {"name": self.paths[i].stem, "path": str(self.paths[i])}


class NamedData(Dataset):
    """`n` samples of a built-in classification data set (test split), as (image, label)."""

    def __init__(self, name: str, n: int, seed: int, fit: Any = None) -> None:
        from attnscope import data

        self.name, self.data, self.fit = name, data.get(name, "test", n, seed=seed), fit
        self.n = min(n, len(self.data))
        if not hasattr(self.data[0], "label"):
            raise DataError(f"data set {name!r} has no class labels to explain; use a classification data set")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.data[i]
        image = sample.image
        if self.fit is not None:
            image = self.fit.place(image.shape[-2], image.shape[-1], f"{self.name}-{i:04d}").apply(image).clamp(0, 1)
        return image, int(sample.label)

    def source(self, i: int) -> dict[str, Any]:
        return {"name": f"{self.name}-{i:04d}", "data": self.name, "index": i}


def shard_name(k: int) -> str:
    return f"{MAPS}/shard-{k:05d}.safetensors"


def _prepare(out: Path, run: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Rank 0, under the lock: a fresh output folder for `run`, or the interrupted one `resume` continues."""
    marker = outdir.read_marker(out)
    if resume:
        if marker is None or marker.get("command") != COMMAND or not marker.get("resumable"):
            raise InputError(f"--resume: {out} does not hold an interrupted streamed `attnscope explain` run")
        if not marker.get("partial"):
            raise InputError(f"--resume: the run in {out} is complete; nothing to resume")
        try:
            before = json.loads((out / RUN).read_text())
        except (OSError, ValueError):
            raise InputError(f"--resume: {out / RUN} is missing or unreadable; start the run again") from None
        changed = sorted(k for k in set(before) | set(run) if before.get(k) != run.get(k))
        if changed:
            raise InputError(f"--resume: the run in {out} was started with other settings ({', '.join(changed)}); "
                             "resume it with the same command, or start a new one")
        for tmp in (out / MAPS).iterdir() if (out / MAPS).is_dir() else ():
            if _TMP.fullmatch(tmp.name):  # the shard a killed run was writing, in the run's own maps/
                tmp.unlink()
        return
    if marker is not None and marker.get("resumable") and marker.get("partial") and not overwrite:
        raise InputError(f"--out {out} holds an interrupted streamed run; pass --resume to continue it "
                         "or --overwrite to replace it")
    if outdir.check(out, COMMAND, overwrite):
        outdir.remove_listed(out, marker["files"])
    (out / MAPS).mkdir(parents=True, exist_ok=True)
    _mark(out, partial=True)
    fileio.write_json(out / RUN, run)


def _mark(out: Path, partial: bool) -> None:
    files = [f"{MAPS}/", RUN] + ([] if partial else [MANIFEST])
    marker = {"format": outdir.FORMAT, "command": COMMAND, "files": files, "resumable": True}
    if partial:
        marker["partial"] = True
    fileio.write_json(out / outdir.MARKER, marker)


def _agree(world: Any, error: str | None) -> None:
    """Every rank raises rank 0's error (so none waits at a barrier for a rank that failed)."""
    if world.distributed:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise InputError(error)


def explain_dataset(
    model: nn.Module,
    dataset: Dataset,
    out: str | Path,
    methods: Sequence[str],
    *,
    targets: str | int = "pred",
    layer: str = "auto",
    options: dict[str, dict[str, Any]] | None = None,
    shard_size: int = 64,
    batch_size: int = 16,
    workers: int = 0,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Explain every image of `dataset` ((image (3, H, W), label) items) into the shards of `out`; the manifest.

    `targets`: "pred", "label" or a class index. `prepare`: applied to each batch before the model
    (normalisation). `settings`: what else defines the run (model, data), compared on `resume`.
    Under `torchrun` call it in every process (the process group set up by `train.distributed.setup`).
    """
    from attnscope import console

    world = _world()
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    out = Path(out)
    total = len(dataset)
    if total == 0:
        raise DataError("the data set to explain is empty")
    shards = math.ceil(total / shard_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    image, label = dataset[0]  # the first image explained alone: a bad method, option, layer or target fails
    _maps(model, image[None], torch.tensor([label]), methods, targets, layer, options, 1, prepare, device)
    run = {"format": STREAM_FORMAT, "methods": list(methods), "targets": targets, "layer": layer,
           "options": options or {}, "total": total, "shard_size": shard_size, "batch_size": batch_size,
           "settings": json.loads(json.dumps(settings or {}, default=str))}
    with ExitStack() as stack:
        error = None
        if world.main:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(outdir.lock(out))
                _prepare(out, run, resume, overwrite)
            except InputError as e:
                error = str(e)
        _agree(world, error)
        mine = [k for k in range(shards) if k % world.size == world.rank and not (out / shard_name(k)).exists()]
        indices = [i for k in mine for i in range(k * shard_size, min(total, (k + 1) * shard_size))]
        loader = DataLoader(Subset(dataset, indices), batch_size=shard_size, shuffle=False, num_workers=workers,
                            pin_memory=device.type == "cuda")
        with console.progress(len(indices), "explain", enabled=progress and world.main) as bar:
            for k, (images, labels) in zip(mine, loader, strict=True):
                _write_shard(out, k, k * shard_size, model, images, labels, methods, targets, layer, options,
                             batch_size, prepare, device)
                bar.advance(len(images), shard=f"{k + 1}/{shards}")
        entries = _gathered(world, [k for k in range(shards) if k % world.size == world.rank])
        if not world.main:
            return {}
        missing = [shard_name(k) for k in range(shards) if not (out / shard_name(k)).exists()]
        if missing:
            raise DataError(f"shards missing after the run: {', '.join(missing[:3])}")
        manifest = {
            "format": STREAM_FORMAT, "command": COMMAND, "methods": list(methods), "total": total,
            "shard_size": shard_size, "processes": world.size,
            "shards": [{"file": shard_name(k), "first": k * shard_size,
                        "count": min(total, (k + 1) * shard_size) - k * shard_size} for k in sorted(entries)],
            "images": [dataset.source(i) if hasattr(dataset, "source") else {"index": i} for i in range(total)],
        }
        fileio.write_json(out / MANIFEST, manifest)
        _mark(out, partial=False)
        return manifest


def _world() -> Any:
    import torch.distributed as dist

    from attnscope.train.distributed import World

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def _gathered(world: Any, mine: list[int]) -> list[int]:
    """The shards of every rank (rank 0 merges them), after every rank has written its own."""
    if not world.distributed:
        return mine
    import torch.distributed as dist

    every: list[Any] = [None] * world.size
    dist.all_gather_object(every, mine)
    return [k for part in every for k in part]


def _maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, methods: Sequence[str], targets: str | int,
          layer: str, options: dict | None, batch_size: int, prepare: Callable[[torch.Tensor], torch.Tensor],
          device: torch.device) -> Any:
    """`explain()` of a batch of the data set, its targets from `targets` ("pred", "label" or a class)."""
    from attnscope.explain import explain

    if targets == "label" and bool((labels < 0).any()):
        raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
    spec = labels.to(device) if targets == "label" else (None if targets == "pred" else int(targets))
    return explain(model, prepare(images).to(device), list(methods), spec, layer, options, batch_size)


def _write_shard(out: Path, k: int, first: int, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 methods: Sequence[str], targets: str | int, layer: str, options: dict | None, batch_size: int,
                 prepare: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
    """Maps of one shard (n images), written atomically as `maps/shard-k.safetensors`."""
    maps = _maps(model, images, labels, methods, targets, layer, options, batch_size, prepare, device)
    tensors = {name: amap.values.detach().float().cpu() for name, amap in maps.items()}
    tensors["index"] = torch.arange(first, first + len(images))
    tensors["predicted"] = maps.predicted.cpu()
    tensors["target"] = maps.targets.cpu() if maps.targets is not None else maps.predicted.cpu()
    fileio.save_tensors(out / shard_name(k), tensors, {"shard": k, "first": first, "count": len(images)})
