"""`attnscope bench --stream`: the leaderboard of a whole folder or data set, scored shard by shard
(`attnscope.stream.bench_dataset`), resumable with `--resume`, split across the processes of torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from attnscope import console
from attnscope.errors import InputError


def count(text: str | None, option: str, default: int) -> int:
    """A number of images given as text (`--images 16`); a folder or data set needs --stream."""
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{option} {text}: a number of test images; a folder or data set needs --stream") from None


def bench_stream(checkpoint: str, out: str | None, overwrite: bool, images: str, n: int | None, shard_size: int,
                 workers: int, resume: bool, data: str | None, methods: str, columns: list[str], settings: Any,
                 method_opt: tuple[str, ...], estimate_only: bool, quiet: bool) -> None:
    """Stream `--images` through the leaderboard into `--out` (every process of torchrun calls it)."""
    from attnscope.cli.bench import explainer_of, terminal_tables
    from attnscope.cli.explain_stream import checkpoint_data, dataset_of, world_of
    from attnscope.cli.options import load_model, parse_list
    from attnscope.stream import FolderImages
    from attnscope.stream.bench import bench_dataset
    from attnscope.stream.settings import Streaming

    refused = [(out is None, "--out is required"), (estimate_only, "--estimate times the in-memory run; "
                                                                   "leave out --stream"),
               (data is not None, "--data names the data set of the in-memory run; with --stream pass it "
                                  "as --images DATASET")]
    for bad, message in refused:
        if bad:
            raise InputError(message)
    names = None if methods == "all" else parse_list(methods, "--methods")
    model, header = load_model(checkpoint)
    data_seed, config = checkpoint_data(checkpoint, header, images)
    meta = {"checkpoint": str(checkpoint), "data": images, "n": n, "data_seed": data_seed, "data_cfg": config,
            "tolerance":
            settings.tolerance, "step": settings.step, "targets": "label", "perturbations": settings.perturbations,
            "radius": settings.radius, "seed": settings.seed, "stream": True}
    with world_of(model) as world:
        dataset = dataset_of(images, n, data_seed, None, config)
        if isinstance(dataset, FolderImages):
            meta["targets"] = "predicted"
            if world.main:
                click.echo("images of a folder have no boxes or masks: the localisation columns are not "
                           "applicable, and each image is scored for the class the model predicts", err=True)
        how = explainer_of(model, names, method_opt)
        result = bench_dataset(model, dataset, Path(out), how, metrics=columns, settings=settings, meta=meta,
                               streaming=Streaming(shard_size, workers, resume, overwrite, not quiet))
    if not world.main:
        return
    head = result["meta"]
    for table in terminal_tables(result["rows"], head["columns"], head["lower_is_better"], head["images"], images):
        console.table(*table)
    if head["skipped"]:
        click.echo(f"left out (no ground truth for them): {', '.join(head['skipped'])}", err=True)
    click.echo(f"wrote {Path(out) / 'leaderboard.csv'} and {Path(out) / 'leaderboard.json'} "
               f"(from {len(list((Path(out) / 'shards').iterdir()))} shards in shards/, manifest.json)")
