"""`attnscope sanity --stream`: randomisation tests of a whole folder or data set, shard by shard
(`attnscope.stream.sanity_dataset`), resumable with `--resume`, split across the processes of torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from attnscope.errors import InputError


def sanity_stream(model, header: dict[str, Any], checkpoint: str, runners: dict[str, Any], images: str,
                  n: int | None, out: Path, overwrite: bool, resume: bool, shard_size: int, workers: int, keep: int,
                  settings: dict[str, Any], quiet: bool) -> None:
    """Run `runners` (the tests asked for) over `--images` into `--out` (every process of torchrun calls it)."""
    from attnscope.cli.explain_stream import checkpoint_data, dataset_of, world_of
    from attnscope.cli.sanity import show
    from attnscope.modules import device_of
    from attnscope.stream.sanity import sanity_dataset
    from attnscope.stream.settings import Streaming

    data_seed, config = checkpoint_data(checkpoint, header, images)
    with world_of(model) as world:
        dataset = dataset_of(images, n, data_seed, None, config)
        if settings["targets"] == "label" and not hasattr(dataset, "data"):
            raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
        streaming = Streaming(shard_size, workers, resume, overwrite, not quiet)
        results = sanity_dataset(dataset, out, runners, keep=keep, streaming=streaming,
                                 settings={**settings, "data_seed": data_seed, "data_cfg": config},
                                 pin=device_of(model).type == "cuda", meta={"checkpoint": str(checkpoint),
                                                                             "data": images})
    if not world.main:
        return
    for test, result in results.items():
        show(test, result, [out / f"{test}.csv", out / f"{test}.json", out / f"{test}_similarity.png",
                            *[out / f"{test}_maps_{i}.png" for i in range(0 if result.images is None
                                                                          else result.images.shape[0])]])
    click.echo(f"wrote {out}/ ({len(list((out / 'shards').iterdir()))} shards in shards/, manifest.json)")
