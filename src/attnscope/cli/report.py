"""`attnscope report RUN_DIR`: one self-contained report.html of a run (opens from disk, no server)."""

from __future__ import annotations

import click

from attnscope import outdir
from attnscope.cli import cli
from attnscope.cli.options import COUNT


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html).")
@click.option("--images", default=8, show_default=True, type=COUNT, help="Probe images shown per map.")
@click.option("--max-frames", default=60, show_default=True, type=COUNT,
              help="Most snapshots the epoch slider steps through (epoch ends are always kept).")
@click.option("--with", "extra", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Another folder with sanity tables or a leaderboard (attnscope sanity/bench --out).")
def report_command(run_dir: str, out: str | None, images: int, max_frames: int, extra: tuple[str, ...]) -> None:
    """Training curves, tracked maps with an epoch slider, measures, sanity and leaderboard tables, config."""
    from attnscope.errors import InputError
    from attnscope.report import build

    if images < 1 or max_frames < 1:
        raise InputError(f"--images and --max-frames must be >= 1, got {images}, {max_frames}")
    path = build(run_dir, out, images=images, max_frames=max_frames, extra=extra)
    outdir.adopt(path.parent, path.name)  # written into an earlier command's output: it is part of it now
    click.echo(f"wrote {path}")
