"""`attnscope bench`: the leaderboard of every applicable method × every selected metric column
(localisation, faithfulness, robustness, complexity) on a checkpoint's test images, with time per
image and, before it starts, an estimate of how long it will take.

The two files are written into a temporary folder that is renamed to `--out` (`attnscope.outdir`).
"""

from __future__ import annotations

from pathlib import Path

import click

from attnscope import console, fileio, outdir
from attnscope.cli import cli
from attnscope.cli.explain_stream import stream_images, stream_options
from attnscope.cli.options import load_model, method_options, parse_list
from attnscope.cli.sanity import load_probe
from attnscope.errors import InputError


@cli.command("bench")
@click.option("--checkpoint", required=True, help="Run folder or checkpoint file of a trained classifier.")
@click.option("--out", default=None, help="Folder for leaderboard.csv and .json (not with --estimate).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier `attnscope bench` output.")
@stream_options("score", "Score --images shard by shard (bounded memory), resumable, split across the processes "
                "of torchrun; the table from the shards' sums.")
@click.option("--data", default=None, help="Data set with boxes and masks (default: the checkpoint's).")
@click.option("--methods", default="all", show_default=True, help="'all' applicable methods, or a comma list.")
@click.option("--metrics", default="default", show_default=True,
              help="Columns: 'default', 'all', groups (localisation, faithfulness, robustness, complexity) and "
                   "column names, comma-separated (see docs/sanity.md).")
@click.option("--tolerance", default=0.0, show_default=True, type=float, help="Pointing game tolerance (px).")
@click.option("--step", default=None, type=int, help="Deletion/insertion pixels per step (default: one row).")
@click.option("--batch-size", default=256, show_default=True, type=int, help="Perturbed images per forward.")
@click.option("--perturbations", default=10, show_default=True, type=int, help="Robustness: perturbed copies.")
@click.option("--radius", default=0.02, show_default=True, type=float, help="Robustness: noise radius U(-r, r).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw of the metrics.")
@click.option("--method-opt", multiple=True, metavar="METHOD.KEY=VALUE", help="Method option, e.g. ig.steps=16.")
@click.option("--estimate", "estimate_only", is_flag=True, help="Print the time estimate and stop.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_command(checkpoint, out, overwrite, images, n, stream, shard_size, workers, resume, data, methods, metrics,
                  tolerance, step, batch_size, perturbations, radius, seed, method_opt, estimate_only, quiet) -> None:
    """Score every applicable method (post-hoc and intrinsic) on CHECKPOINT's test images: against
    the digits' boxes and masks, by asking the model (deletion, insertion, ROAD, ...), by the maps'
    robustness to small perturbations and their complexity. Calibration rows bound each column."""
    from attnscope import data as datasets
    from attnscope.cli.bench_stream import bench_stream, count
    from attnscope.evaluate import COLUMNS, Mosaics, Settings, estimate, leaderboard
    from attnscope.evaluate.columns import select
    from attnscope.report.sanity import table_csv

    if out is None and not estimate_only:
        raise InputError("--out is required (or pass --estimate to only print the time estimate)")
    if tolerance < 0 or (step is not None and step < 1) or batch_size < 1 or perturbations < 1 or radius < 0:
        raise InputError(f"need --tolerance >= 0, --step >= 1, --batch-size >= 1, --perturbations >= 1 and "
                         f"--radius >= 0, got {tolerance}, {step}, {batch_size}, {perturbations}, {radius}")
    columns = select(metrics)
    stream = stream_images(stream, images, n, resume, shard_size, workers)
    if stream:
        bench_stream(checkpoint, out, overwrite, images, n, shard_size, workers, resume, data, methods, columns,
                     Settings(tolerance=tolerance, step=step, batch_size=batch_size, seed=seed,
                              perturbations=perturbations, radius=radius), method_opt, estimate_only, quiet)
        return
    n_images = count(images, "--images", 32)
    if out is not None:
        out = Path(out)
        outdir.check(out, "bench", overwrite)
    model, header = load_model(checkpoint)
    probe = load_probe(checkpoint, header, data, n_images)
    names = None if methods == "all" else parse_list(methods, "--methods")
    settings = Settings(tolerance=tolerance, step=step, batch_size=batch_size, seed=seed, perturbations=perturbations,
                        radius=radius, progress=not quiet)
    mosaics = None
    if "focus" in columns:
        built = datasets.mosaics(datasets.get(probe.data, "test", max(4 * n_images, 64), seed=0, **probe.data_cfg),
                                 n_images, seed=seed)
        mosaics = Mosaics(built.images, built.labels, built.quadrants)
    common = dict(how=explainer_of(model, names, method_opt), metrics=columns, settings=settings, mosaics=mosaics)
    guess = estimate(model, probe.images, probe.labels, probe.boxes, probe.masks, **common)
    parts = ", ".join(f"{g} {s:.0f} s" for g, s in guess.groups.items() if s >= 0.5)
    click.echo(f"estimated time: {guess.total:.0f} s (explaining {guess.explain:.0f} s{', ' + parts if parts else ''}; "
               f"timed on 1 and {guess.measured_on} images)", err=True)
    if estimate_only:
        return
    board = leaderboard(model, probe.images, probe.labels, probe.boxes, probe.masks, **common)
    lower = [c for c, up in board.higher_is_better().items() if not up]
    meta = {"checkpoint": str(checkpoint), "data": probe.data, "images": n_images, "tolerance": tolerance,
            "step": step, "targets": "label", "columns": board.columns, "lower_is_better": lower,
            "groups": {c: COLUMNS.get(c).group for c in board.columns}, "skipped": board.skipped,
            "perturbations": perturbations, "radius": radius, "seed": seed,
            "estimated_s": round(guess.total, 1), "seconds": {k: round(v, 2) for k, v in board.seconds.items()}}
    with outdir.building(out, "bench", overwrite) as partial:
        fileio.write_text(partial / "leaderboard.csv", table_csv(board.rows))
        fileio.write_json(partial / "leaderboard.json", {"meta": meta, "rows": board.rows})
    for table in terminal_tables(board.rows, board.columns, lower, n_images, probe.data):
        console.table(*table)
    if board.skipped:
        click.echo(f"left out (no ground truth for them): {', '.join(board.skipped)}", err=True)
    click.echo(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.json'}")


# The board's own column beside the metrics (whose short names and legends are declared with them).
TIME = {"ms_per_image": ("ms", "ms per image")}


def terminal_tables(rows: list[dict], columns: list[str], lower: list[str], n_images: int,
                    data: str) -> list[tuple[str, list[str], list[list], dict[str, str]]]:
    """(title, short column names, cells, legend) per column group, then the time table, as `console.table`
    prints them; a column where lower is better is marked ↓."""
    from attnscope.evaluate import COLUMNS
    from attnscope.metrics.declare import header

    groups = {c: COLUMNS.get(c).group for c in columns} | {"ms_per_image": "time"}
    tables = []
    for group in dict.fromkeys(groups.values()):
        cols = [c for c in [*columns, "ms_per_image"] if groups[c] == group]
        heads = {c: TIME.get(c) or header(c) for c in cols}
        short = [heads[c][0].removesuffix("↓") + ("↓" if c in lower else "") for c in cols]
        legend = {name: heads[c][1] for c, name in zip(cols, short, strict=True) if heads[c][1] != c}
        legend |= {"↓": "lower is better"} if any(c in lower for c in cols) else {}
        if group == "time":
            tables.append(("time", ["method", "kind", *short], [[r["method"], r["kind"], *[r.get(c) for c in cols]]
                                                                for r in rows], legend))
            continue
        tables.append((f"{group}: {n_images} {data} test images, true class", ["method", *short],
                       [[r["method"], *[r.get(c) for c in cols]] for r in rows], legend))
    return tables


def explainer_of(model, names: list[str] | None, method_opt: tuple[str, ...]):
    """The leaderboard's `how`: the methods asked for (None: every one that applies) with their --method-opt."""
    from attnscope.evaluate import applicable_methods
    from attnscope.explain import Explainer

    options = method_options(method_opt) or None
    if names is None and options is None:
        return None
    return Explainer(names if names is not None else applicable_methods(model), options=options)
