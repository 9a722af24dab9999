"""`attnscope explain --stream`: a whole folder or data set, streamed shard by shard (`attnscope.stream`),
resumable with `--resume`, split across the processes of `torchrun --nproc_per_node=N`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from attnscope.errors import DataError, InputError


def dataset_of(source: str, n: int | None, seed: int, fit: Any, config: dict[str, Any] | None = None):
    """The images of `--images` as a lazily read data set: every image of a folder (or one file), or `n`
    samples of a data set (built with `config`)."""
    from attnscope import data
    from attnscope.cli.options import existing_input
    from attnscope.stream import FolderImages, NamedData

    if existing_input(source, "--images") is not None:
        from attnscope.data.folder import image_paths

        return FolderImages(image_paths(source), fit)  # all of them: --n counts data set samples
    if source in data.names():
        if n is None or n < 1:
            raise InputError(f"--n must be >= 1, got {n}")
        return NamedData(source, n, seed, fit, config)
    raise DataError(f"--images {source}: no such file or folder, and not a built-in data set "
                    f"({', '.join(data.names())})")


@contextmanager
def world_of(model) -> Iterator[Any]:
    """The processes of `torchrun` (one process without it), set up on the model's device, torn down after."""
    from attnscope.modules import device_of
    from attnscope.train import distributed

    world = distributed.setup(device_of(model))
    try:
        yield world
    finally:
        distributed.teardown(world)


def stream_options(verb: str, stream_help: str) -> Callable[[Callable], Callable]:
    """The options of a command that also streams (`bench`, `sanity`): --images as a count or, with --stream,
    a folder or data set; --n, --stream, --shard-size, --workers, --resume."""
    options = [
        click.option("--images", default=None, help=f"Test images to {verb}: a count [32]; with --stream a folder "
                                                     "of images or a data set (with --n)."),
        click.option("--n", "--n-images", "n", default=None, type=int,
                     help="--stream: images of the data set --images names (--n-images under torchrun)."),
        click.option("--stream", is_flag=True, help=stream_help),
        click.option("--shard-size", default=64, show_default=True, type=int, help="Images per shard file (--stream)."),
        click.option("--workers", default=0, show_default=True, type=int, help="DataLoader workers (--stream)."),
        click.option("--resume", is_flag=True, help="Continue an interrupted --stream run in --out (same command)."),
    ]

    def add(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return add


def checkpoint_data(source: str, header: dict[str, Any], images: str) -> tuple[int, dict[str, Any]]:
    """The data seed and configuration a checkpoint's run used for its data set, when `images` names that
    data set (as the in-memory `bench`/`sanity` probe reads it); otherwise the seed and no configuration."""
    from attnscope.cli.options import read_run_config

    info = header.get("info", {})
    config = info.get("data_cfg", {}) if images == info.get("data") else {}
    return read_run_config(source).get("data_seed", 0), dict(config) if isinstance(config, dict) else {}


def stream_images(stream: bool, images: str | None, n: int | None, resume: bool, shard_size: int = 1,
                  workers: int = 0) -> bool:
    """Whether a command streams (`--stream`, or `--resume`); refuse streaming without --images DIR|DATASET."""
    stream = stream or resume
    if stream and images is None:
        raise InputError("--stream needs --images DIR|DATASET (a folder of images, or a data set with --n)")
    if shard_size < 1 or workers < 0:
        raise InputError(f"--shard-size must be >= 1 and --workers >= 0, got {shard_size} and {workers}")
    if not stream and n is not None:
        raise InputError("--n counts the images of --images DATASET with --stream; without it, --images is the count")
    return stream


def run_stream(model, info: dict[str, Any], settings: dict[str, Any], images: str, n: int | None, seed: int, fit: Any,
               names: list[str], targets: str, layer: str, options: dict, batch_size: int, shard_size: int,
               workers: int, normalize: str, out: str, overwrite: bool, resume: bool, quiet: bool) -> None:
    """Stream `--images` through the model into the shards of `--out` (every process of torchrun calls it)."""
    from attnscope.explain import Explainer
    from attnscope.stream import Streaming, explain_dataset

    if targets not in ("pred", "label"):
        try:
            targets = int(targets)
        except ValueError:
            raise InputError(f"--targets must be pred, label or a class index, got {targets!r}") from None
    with world_of(model) as world:
        dataset = dataset_of(images, n, seed, fit)
        manifest = explain_dataset(
            model, dataset, Path(out), Explainer(names, layer, options, batch_size=batch_size), targets=targets,
            settings=settings, streaming=Streaming(shard_size, workers, resume, overwrite, not quiet))
    if world.main:
        click.echo(f"explained {manifest['total']} images with {', '.join(names)} → {out}/ "
                   f"({len(manifest['shards'])} shards in maps/, manifest.json)")
