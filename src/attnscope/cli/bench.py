"""`attnscope bench`: the leaderboard of every applicable method × every ground-truth and
faithfulness metric on a checkpoint's ClutteredDigits test images, with time per image.

The two files are written into a temporary folder that is renamed to `--out` (`attnscope.outdir`).
"""

from __future__ import annotations

from pathlib import Path

import click

from attnscope import console, fileio, outdir
from attnscope.cli import cli
from attnscope.cli.options import load_model, method_options, parse_list
from attnscope.cli.sanity import load_probe
from attnscope.errors import InputError

# Short column names for the terminal (80 columns), with the legend printed under the table.
SHORT = {"pointing": ("point", "pointing game"), "energy_box": ("energy", "energy in box"),
         "mass_mask": ("mass", "relevance mass in mask"), "rank_mask": ("rank", "relevance rank in mask"),
         "deletion_zero": ("del0↓", "deletion AUC, zero fill"), "deletion_blur": ("delB↓", "deletion AUC, blur"),
         "insertion_blur": ("insB", "insertion AUC, blur"), "insertion_zero": ("ins0", "insertion AUC, zero"),
         "avg_drop_pct": ("drop%↓", "Average Drop %"), "increase_pct": ("inc%", "Increase in Confidence %"),
         "ms_per_image": ("ms", "ms per image")}


@cli.command("bench")
@click.option("--checkpoint", required=True, help="Run folder or checkpoint file of a trained classifier.")
@click.option("--out", required=True, help="Folder for leaderboard.csv and leaderboard.json.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier `attnscope bench` output.")
@click.option("--images", "n_images", default=32, show_default=True, type=int, help="Test images to score.")
@click.option("--data", default=None, help="Data set with boxes and masks (default: the checkpoint's).")
@click.option("--methods", default="all", show_default=True, help="'all' applicable methods, or a comma list.")
@click.option("--tolerance", default=0.0, show_default=True, type=float, help="Pointing game tolerance (px).")
@click.option("--step", default=None, type=int, help="Deletion/insertion pixels per step (default: one row).")
@click.option("--batch-size", default=256, show_default=True, type=int, help="Perturbed images per forward.")
@click.option("--method-opt", multiple=True, metavar="METHOD.KEY=VALUE", help="Method option, e.g. ig.steps=16.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_command(checkpoint, out, overwrite, n_images, data, methods, tolerance, step, batch_size, method_opt,
                  quiet) -> None:
    """Score every applicable method (post-hoc and intrinsic) on CHECKPOINT's test images against the
    digits' boxes and masks and by deletion/insertion, Average Drop and Increase in Confidence."""
    from attnscope.report.sanity import table_csv
    from attnscope.sanity.leaderboard import HIGHER_IS_BETTER, leaderboard

    if tolerance < 0 or (step is not None and step < 1) or batch_size < 1:
        raise InputError(f"need --tolerance >= 0, --step >= 1 and --batch-size >= 1, got {tolerance}, {step}, "
                         f"{batch_size}")
    out = Path(out)
    outdir.check(out, "bench", overwrite)
    model, header = load_model(checkpoint)
    probe = load_probe(checkpoint, header, data, n_images)
    if probe.boxes is None:
        raise InputError(f"data set {probe.data!r} has no boxes and masks; the leaderboard needs ClutteredDigits-like "
                         "ground truth (e.g. --data clutter)")
    names = None if methods == "all" else parse_list(methods, "--methods")
    with outdir.building(out, "bench", overwrite) as partial:
        rows = leaderboard(model, probe.images, probe.labels, probe.boxes, probe.masks, names,
                           tolerance=tolerance, step=step, batch_size=batch_size,
                           options=method_options(method_opt) or None, progress=not quiet)
        meta = {"checkpoint": str(checkpoint), "data": probe.data, "images": n_images, "tolerance": tolerance,
                "step": step, "targets": "label",
                "lower_is_better": [k for k, v in HIGHER_IS_BETTER.items() if not v]}
        fileio.write_text(partial / "leaderboard.csv", table_csv(rows))
        fileio.write_json(partial / "leaderboard.json", {"meta": meta, "rows": rows})
    console.table(*terminal_table(rows, n_images, probe.data))
    click.echo(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.json'}")


def terminal_table(rows: list[dict], n_images: int, data: str) -> tuple[str, list[str], list[list], dict[str, str]]:
    """(title, short column names, cells, legend) of the leaderboard as `console.table` prints it."""
    from attnscope.sanity.leaderboard import METRICS

    columns = ["method", "kind", *METRICS.names(), "ms_per_image"]
    short = [SHORT.get(c, (c, c))[0] for c in columns]
    legend = {SHORT[c][0]: SHORT[c][1] for c in columns if c in SHORT} | {"↓": "lower is better"}
    title = f"leaderboard: {n_images} {data} test images, true class"
    return title, short, [[r.get(c) for c in columns] for r in rows], legend
