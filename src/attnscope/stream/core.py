"""The sharded-run core every streamed command shares (`explain`, `bench`, `sanity` with `--stream`).

An output folder of a streamed run holds `run.json` (the settings and size of the run), one file per shard
of `shard_size` consecutive images in a shard folder (`maps/` for explain, `shards/` for bench and sanity),
`manifest.json` (written last), the command's own result files, and the marker of `attnscope.outdir`
("partial" and "resumable" until the end). A shard file appears only complete (written beside and renamed),
so after a kill the shards there are exactly the finished ones: `resume=True` checks the settings against
run.json, removes the temporary file of the shard being written when the run died, and computes the
missing shards. Under `torchrun` rank r computes shards r, r + N, r + 2N ...; rank 0 holds the output's
lock, checks and prepares the folder, and, once every rank has written its shards, calls `finish` on the
shard numbers in order and writes the manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset, Subset

from attnscope import fileio, outdir
from attnscope.errors import DataError, InputError

RUN, MANIFEST = "run.json", "manifest.json"
STREAM_FORMAT = "attnscope-stream/1"
_TMP = re.compile(r"\.shard-\d{5}\.safetensors\.[a-z0-9_]+\.tmp")  # fileio.atomic_path's names in the shard folder

Compute = Callable[[int, int, Any], None]  # (shard k, its first image, the loader's batch) -> writes the shard file
Finish = Callable[[list[int]], list[str]]  # (every shard, in order) -> the result files it wrote (relative)


@dataclass
class Sharded:
    """What a streamed run is: its command (the marker's), output folder, settings (`run.json`, compared on
    resume), images, shard size and the folder its shard files go in."""

    command: str
    out: Path
    run: dict[str, Any]
    dataset: Dataset
    shard_size: int
    folder: str = "shards"
    manifest: dict[str, Any] = field(default_factory=dict)  # command-specific manifest keys (after "command")

    @property
    def total(self) -> int:
        return len(self.dataset)

    @property
    def shards(self) -> int:
        return math.ceil(self.total / self.shard_size)

    def name(self, k: int) -> str:
        return f"{self.folder}/shard-{k:05d}.safetensors"

    def span(self, k: int) -> range:
        return range(k * self.shard_size, min(self.total, (k + 1) * self.shard_size))


def positive(**values: Any) -> None:
    """Refuse a count that is not a positive integer (shard size, batch size), naming it."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def run_shards(job: Sharded, compute: Compute, finish: Finish | None = None, *, resume: bool = False,
               overwrite: bool = False, workers: int = 0, pin: bool = False, progress: bool = False) -> dict[str, Any]:
    """Compute the missing shards of `job` (this process's share under torchrun), then on rank 0 `finish` and
    the manifest; returns the manifest on rank 0 and {} on the other ranks."""
    from attnscope import console

    world = _world()
    if job.total == 0:
        raise DataError(f"the data set to {job.command} is empty")
    job.run = {"format": STREAM_FORMAT, **json.loads(json.dumps(job.run, default=str))}
    with ExitStack() as stack:
        error = None
        if world.main:
            try:
                job.out.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(outdir.lock(job.out))
                _prepare(job, resume, overwrite)
            except InputError as e:
                error = str(e)
        _agree(world, error)
        mine = [k for k in range(job.shards) if k % world.size == world.rank and not (job.out / job.name(k)).exists()]
        indices = [i for k in mine for i in job.span(k)]
        loader = DataLoader(Subset(job.dataset, indices), batch_size=job.shard_size, shuffle=False,
                            num_workers=workers, pin_memory=pin)
        with console.progress(len(indices), job.command, enabled=progress and world.main) as bar:
            for k, batch in zip(mine, loader, strict=True):
                compute(k, k * job.shard_size, batch)
                bar.advance(len(job.span(k)), shard=f"{k + 1}/{job.shards}")
        entries = _gathered(world, [k for k in range(job.shards) if k % world.size == world.rank])
        if not world.main:
            return {}
        missing = [job.name(k) for k in range(job.shards) if not (job.out / job.name(k)).exists()]
        if missing:
            raise DataError(f"shards missing after the run: {', '.join(missing[:3])}")
        results = finish(sorted(entries)) if finish is not None else []
        manifest = {
            "format": STREAM_FORMAT, "command": job.command, **job.manifest, "total": job.total,
            "shard_size": job.shard_size, "processes": world.size,
            "shards": [{"file": job.name(k), "first": job.span(k).start, "count": len(job.span(k))}
                       for k in sorted(entries)],
            "images": [source_of(job.dataset, i) for i in range(job.total)],
        }
        fileio.write_json(job.out / MANIFEST, manifest)
        _mark(job, partial=False, results=results)
        return manifest


def source_of(dataset: Dataset, i: int) -> dict[str, Any]:
    """Where image i of `dataset` came from (its `source(i)`), or its index."""
    return dataset.source(i) if hasattr(dataset, "source") else {"index": i}


def _prepare(job: Sharded, resume: bool, overwrite: bool) -> None:
    """Rank 0, under the lock: a fresh output folder for `job`, or the interrupted one `resume` continues."""
    out, marker = job.out, outdir.read_marker(job.out)
    if resume:
        if marker is None or marker.get("command") != job.command or not marker.get("resumable"):
            raise InputError(f"--resume: {out} does not hold an interrupted streamed `attnscope {job.command}` run")
        if not marker.get("partial"):
            raise InputError(f"--resume: the run in {out} is complete; nothing to resume")
        for entry in {*marker["files"], f"{job.folder}/", RUN, MANIFEST}:  # written again: never through a link
            outdir.contained(out, entry, job.command)
        try:
            before = json.loads(fileio.read_regular(out / RUN, "--resume:", InputError))
        except (InputError, ValueError):
            raise InputError(f"--resume: {out / RUN} is missing or unreadable; start the run again") from None
        if not isinstance(before, dict):
            raise InputError(f"--resume: {out / RUN} does not hold a run's settings; start the run again")
        changed = sorted(k for k in set(before) | set(job.run) if before.get(k) != job.run.get(k))
        if changed:
            raise InputError(f"--resume: the run in {out} was started with other settings ({', '.join(changed)}); "
                             "resume it with the same command, or start a new one")
        folder = out / job.folder
        for tmp in folder.iterdir() if folder.is_dir() else ():
            if _TMP.fullmatch(tmp.name):  # the shard a killed run was writing, in the run's own shard folder
                tmp.unlink()
        return
    if marker is not None and marker.get("resumable") and marker.get("partial") and not overwrite:
        raise InputError(f"--out {out} holds an interrupted streamed run; pass --resume to continue it "
                         "or --overwrite to replace it")
    if outdir.check(out, job.command, overwrite):
        outdir.remove_listed(out, marker["files"], job.command)
    (out / job.folder).mkdir(parents=True, exist_ok=True)
    _mark(job, partial=True)
    fileio.write_json(out / RUN, job.run)


def _mark(job: Sharded, partial: bool, results: Sequence[str] = ()) -> None:
    files = [f"{job.folder}/", RUN] + ([] if partial else [MANIFEST, *results])
    marker = {"format": outdir.FORMAT, "command": job.command, "files": files, "resumable": True}
    if partial:
        marker["partial"] = True
    fileio.write_json(job.out / outdir.MARKER, marker)


def _agree(world: Any, error: str | None) -> None:
    """Every rank raises rank 0's error (so none waits at a barrier for a rank that failed)."""
    if world.distributed:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise InputError(error)


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
