"""Explaining a whole data set: images streamed through a DataLoader, maps written shard by shard,
resumable after a crash, split across the processes of `torchrun` (the folder, resume and rank logic is
`stream.core`'s).

An output folder (`--out`) of a streamed explain run holds

    run.json                   the settings of the run and its size: total images, shard size, shards
    maps/shard-00000.safetensors  one file per shard of `shard_size` consecutive images: `index` (n,),
                               `predicted` (n,), `target` (n,) and one (n, H, W) map per method
    manifest.json              written last: methods, images, and every shard (file, first, count)
    .attnscope-output.json     the marker (`attnscope.outdir`); "partial" and "resumable" until the end

Memory holds one shard's images and maps at a time. Maps are computed by `explain()` exactly as in one
process, so the files are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from attnscope import fileio
from attnscope.errors import InputError
from attnscope.explain import Explainer, as_explainer
from attnscope.stream.core import Sharded, run_shards
from attnscope.stream.settings import Streaming, old_keywords

COMMAND = "explain"
MAPS = "maps"
BATCH = 16  # images per explain call when the `how` says none


def shard_name(k: int) -> str:
    return f"{MAPS}/shard-{k:05d}.safetensors"


@old_keywords()
def explain_dataset(model: nn.Module, dataset: Dataset, out: str | Path, how: Explainer | str | Sequence[str], *,
                    targets: str | int = "pred", prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                    settings: dict[str, Any] | None = None, streaming: Streaming | None = None) -> dict[str, Any]:
    """Explain every image of `dataset` ((image (3, H, W), label) items) as `how` says into the shards of `out`;
    the manifest.

    `targets`: "pred" (the `how`'s targets, by default the predicted class), "label" or a class index.
    `prepare`: applied to each batch before the model (normalisation). `settings`: what else defines the run
    (model, data), compared on resume. `streaming`: shard size, workers, resume or overwrite, progress; the
    images of a shard are explained `how.batch_size` at a time (16 when it says none).
    Under `torchrun` call it in every process (the process group set up by `train.distributed.setup`).
    """
    how, streaming = as_explainer(how), streaming or Streaming()
    how = how if how.batch_size is not None else how.replace(batch_size=BATCH)
    out = Path(out)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if len(dataset):  # the first image explained alone: a bad method, option, layer or target fails
        image, label = dataset[0]
        _maps(model, image[None], torch.tensor([label]), how, targets, prepare, device)
    record = how.settings()
    run = {**record, "targets": targets, "total": len(dataset), "shard_size": streaming.shard_size,
           "settings": settings or {}}
    job = Sharded(COMMAND, out, run, dataset, streaming.shard_size, folder=MAPS,
                  manifest={"methods": list(how.methods)})

    def compute(k: int, first: int, batch: Any) -> None:
        images, labels = batch
        _write_shard(out, k, first, model, images, labels, how, targets, prepare, device)

    return run_shards(job, compute, pin=device.type == "cuda", **streaming.run_shards())


def _maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, how: Explainer, targets: str | int,
          prepare: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Any:
    """The explanation of a batch of the data set, its targets from `targets` ("pred", "label" or a class)."""
    if targets == "label" and bool((labels < 0).any()):
        raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
    spec = labels.to(device) if targets == "label" else (None if targets == "pred" else int(targets))
    return how(model, prepare(images).to(device), spec)


def _write_shard(out: Path, k: int, first: int, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 how: Explainer, targets: str | int, prepare: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device) -> None:
    """Maps of one shard (n images), written atomically as `maps/shard-k.safetensors`."""
    maps = _maps(model, images, labels, how, targets, prepare, device)
    tensors = {name: amap.values.detach().float().cpu() for name, amap in maps.items()}
    tensors["index"] = torch.arange(first, first + len(images))
    tensors["predicted"] = maps.predicted.cpu()
    tensors["target"] = maps.targets.cpu() if maps.targets is not None else maps.predicted.cpu()
    fileio.save_tensors(out / shard_name(k), tensors, {"shard": k, "first": first, "count": len(images)})
