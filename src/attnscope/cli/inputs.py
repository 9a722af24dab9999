"""The option groups of the images a command reads (`images_options`, with `checkpoint_images` for `bench` and
`sanity`) and of streaming (`stream_options`); the other groups are in `cli/common.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from attnscope.cli.common import How, ModelSource, Spec, group
from attnscope.cli.options import parse_fit
from attnscope.errors import InputError

# -- the images ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageChoice:
    """`--images` (a folder, a file, a built-in data set, or a count of the checkpoint's test images),
    `--n`, `--data-seed` and the fit to one input size (`--size/--resize/--crop/--pad`)."""

    source: str | None
    n: int | None
    data_seed: int | None
    fit: Any = None

    @property
    def counted(self) -> bool:
        """`--images N` or none: a count of the checkpoint's test images, not a folder, file or data set."""
        return self.source is None or self.source.isdigit()

    def dataset(self, default_n: int, name: str | None = None, seed: int | None = None,
                config: dict[str, Any] | None = None) -> Any:
        """The images as a lazily read data set: `--images` DIR|FILE|DATA, or the data set `name` (built with
        `seed` and `config`), of which `--images N` (the older form) or `--n` counts the images."""
        from attnscope.data.inputs import images_of

        n = default_n if self.n is None else self.n
        if name is not None and self.counted and self.source is not None:
            if self.n is not None:
                raise InputError("--images N and --n N both count images; give one of them")
            n = int(self.source)
        name = name or self.source
        if name is None:
            raise InputError("--images is required: a folder of images, an image file or a data set")
        if n is not None and n < 1:
            raise InputError(f"--n must be >= 1, got {n}")
        seed = self.data_seed if self.data_seed is not None else (seed or 0)
        return images_of(name, n, seed, self.fit, config)

    @property
    def fit_dict(self) -> dict[str, Any] | None:
        return None if self.fit is None else self.fit.to_dict()


def images_options(required: bool = True, n: int | None = 16, data_seed: int | None = 0,
                   help: str = "A folder of images, one image, or a built-in data set (clutter, photos).",
                   fit: bool = True) -> Callable[[Callable], Callable]:
    specs: list[Spec] = [
        (("--images",), dict(required=required, default=None, metavar="DIR|FILE|DATA", help=help)),
        (("--n", "--n-images", "n"), dict(default=n, show_default=n is not None, type=int,
                                          help="Images taken from a data set (--n-images under torchrun, whose "
                                               "parser claims --n).")),
        (("--data-seed",), dict(default=data_seed, show_default=data_seed is not None, type=int,
                                help="Seed of a built-in data set" + (" (default: the run's)." if data_seed is None
                                                                      else "."))),
    ]
    if fit:
        specs += [
            (("--size",), dict(default=None, metavar="S|H,W", help="Squash images to S×S or H×W (aspect ratio "
                                                                    "lost).")),
            (("--resize",), dict(default=None, metavar="shorter=S|longer=S|H,W", help="Resize keeping the aspect "
                                 "ratio: the shorter (or longer) side to S; H,W squashes.")),
            (("--crop",), dict(default=None, metavar="center[=S|H,W]", help="Centre crop after --resize (default "
                               "S×S with shorter=S), as torchvision's CenterCrop.")),
            (("--pad",), dict(is_flag=True, help="Zero pad to S×S after --resize longer=S (keeps the whole photo).")),
        ]

    def build(images: str | None, n: int | None, data_seed: int | None, size: str | None = None,
              resize: str | None = None, crop: str | None = None, pad: bool = False) -> ImageChoice:
        return ImageChoice(images, n, data_seed, parse_fit(resize, crop, pad, size))

    return group("images", specs, build)


@dataclass(frozen=True)
class TestImages:
    """The test images of a command on a checkpoint: the data set, its name (or folder) and how it was built."""

    dataset: Any
    name: str
    seed: int
    config: dict[str, Any]


def checkpoint_images(source: ModelSource, header: dict[str, Any], images: ImageChoice, data: str | None,
                      stream: bool, how: How | None = None, default_n: int = 32) -> TestImages:
    """`bench`'s and `sanity`'s images: `--images DIR|FILE|DATA`, or `--images N` (default `default_n`) test images
    of the data set the checkpoint was trained on (or of `--data`), with its seed and configuration."""
    from attnscope.data.inputs import FolderImages
    from attnscope.models.runs import checkpoint_data

    if stream and images.counted:
        raise InputError("--stream needs --images DIR|DATASET (a folder of images, or a data set with --n)")
    if data is not None and not images.counted:
        raise InputError(f"--data names the data set of --images N; give --images {data} or leave out --data")
    name, seed, config = checkpoint_data(source.source, header, data if images.counted else images.source)
    dataset = images.dataset(default_n, name, seed, config)
    if how is not None and how.targets == "label" and isinstance(dataset, FolderImages):
        raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
    return TestImages(dataset, name, seed if images.data_seed is None else images.data_seed, config)


# -- streaming -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamChoice:
    """`--stream` (or `--resume`, which continues a stream), images per shard file, DataLoader workers."""

    on: bool
    shard_size: int = 64
    workers: int = 0
    resume: bool = False

    def streaming(self, overwrite: bool, progress: bool) -> Any:
        """The library's `stream.Streaming` of these options, `--overwrite` and the progress bar."""
        from attnscope.stream import Streaming

        return Streaming(self.shard_size, self.workers, self.resume, overwrite, progress)


def stream_options(help: str) -> Callable[[Callable], Callable]:
    specs: list[Spec] = [
        (("--stream",), dict(is_flag=True, help=help)),
        (("--shard-size",), dict(default=64, show_default=True, type=int, help="Images per shard file (--stream).")),
        (("--workers",), dict(default=0, show_default=True, type=int, help="DataLoader workers reading images "
                                                                           "(--stream).")),
        (("--resume",), dict(is_flag=True, help="Continue an interrupted --stream run in --out (same command).")),
    ]

    def build(stream: bool, shard_size: int, workers: int, resume: bool) -> StreamChoice:
        if shard_size < 1 or workers < 0:
            raise InputError(f"--shard-size must be >= 1 and --workers >= 0, got {shard_size} and {workers}")
        return StreamChoice(stream or resume, shard_size, workers, resume)

    return group("streaming", specs, build)


@contextmanager
def world_of(model: Any) -> Iterator[Any]:
    """The processes of `torchrun` (one process without it), set up on the model's device, torn down after."""
    from attnscope.modules import device_of
    from attnscope.train import distributed

    world = distributed.setup(device_of(model))
    try:
        yield world
    finally:
        distributed.teardown(world)
