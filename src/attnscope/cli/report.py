"""`attnscope report RUN_DIR`: one self-contained report.html of a run (opens from disk, no server).

The report is one file (`--out`, default RUN_DIR/report.html), written atomically under the output's lock; an
existing file is replaced only with `--overwrite`, and only if it is a report this command wrote
(`outdir.check_file`). Written into an earlier command's output folder, it becomes part of that output.
"""

from __future__ import annotations

from pathlib import Path

import click

from attnscope import outdir
from attnscope.cli import cli


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an earlier `attnscope report` page.")
@click.option("--images", default=8, show_default=True, type=int, help="Probe images shown per map.")
@click.option("--max-frames", default=60, show_default=True, type=int,
              help="Most snapshots the epoch slider steps through (epoch ends are always kept).")
@click.option("--with", "extra", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Another folder with sanity tables or a leaderboard (attnscope sanity/bench --out).")
def report_command(run_dir: str, out: str | None, overwrite: bool, images: int, max_frames: int,
                   extra: tuple[str, ...]) -> None:
    """Training curves, tracked maps with an epoch slider, measures, sanity and leaderboard tables, config."""
    from attnscope.errors import DataError, InputError
    from attnscope.report import build

    if images < 1 or max_frames < 1:
        raise InputError(f"--images and --max-frames must be >= 1, got {images}, {max_frames}")
    for folder in (run_dir, *extra):
        if not Path(folder).is_dir():
            raise DataError(f"run folder not found: {folder}")
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    outdir.check_file(path, "report", overwrite, _is_report)
    path.parent.mkdir(parents=True, exist_ok=True)
    with outdir.lock(path):
        outdir.check_file(path, "report", overwrite, _is_report)  # again under the lock
        path = build(run_dir, path, images=images, max_frames=max_frames, extra=extra)
    outdir.adopt(path.parent, path.name)  # written into an earlier command's output: it is part of it now
    click.echo(f"wrote {path}")


def _is_report(path: Path) -> bool:
    """Whether the file at `path` is a page `attnscope report` wrote (its generator tag near the top)."""
    from attnscope.report.html import GENERATOR

    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(4096)
    except OSError:
        return False
