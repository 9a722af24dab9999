"""`attnscope interventions`: remove each object (or the decoy patch) of generated test scenes, measure
the model's probability drop, and check whether each method's mass per object ranks the objects as
the drops do (single deletion), and how much mass falls outside every object (background)."""

from __future__ import annotations

from pathlib import Path

import click

from attnscope import console, fileio
from attnscope.cli import cli
from attnscope.cli.options import load_model, method_options, parse_list
from attnscope.errors import InputError


@cli.command("interventions")
@click.option("--checkpoint", required=True, help="Run folder or checkpoint file of a trained classifier.")
@click.option("--out", required=True, help="Folder for interventions.json and interventions.csv.")
@click.option("--data", default=None, help="clutter, clutter-decoy or scenes (default: the checkpoint's).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]),
              help="Split to draw the scenes from (clutter-decoy: the decoy encodes the label only in train).")
@click.option("--images", "n_images", default=32, show_default=True, type=int, help="Scenes to intervene on.")
@click.option("--methods", default="gradcam,saliency,guided-backprop,ig", show_default=True,
              help="Methods to check, comma-separated.")
@click.option("--targets", default="predicted", show_default=True, type=click.Choice(["predicted", "label"]),
              help="Explain the predicted class or the digit's label.")
@click.option("--method-opt", multiple=True, metavar="METHOD.KEY=VALUE", help="Method option, e.g. ig.steps=16.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated scenes.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def interventions_command(checkpoint, out, data, split, n_images, methods, targets, method_opt, seed, quiet) -> None:
    """Ground-truth interventions on CHECKPOINT: one table per method (probability drop and map mass
    per part), and the single-deletion, top-part and background checks of every method."""
    from attnscope import data as datasets
    from attnscope.evaluate.interventions import SCENES, interventions
    from attnscope.explain import Explainer
    from attnscope.report.sanity import table_csv

    model, header = load_model(checkpoint)
    name = data or header.get("info", {}).get("data")
    if name not in SCENES:
        raise InputError(f"interventions need generated scenes whose parts can be removed: --data "
                         f"{', '.join(SCENES)}, got {name!r}")
    cfg = dict(header.get("info", {}).get("data_cfg", {})) if data is None else {}
    scenes = SCENES[name](datasets.get(name, split, n_images, seed=seed, **cfg), n_images, progress=not quiet)
    how = Explainer(parse_list(methods, "--methods"), options=method_options(method_opt) or None)
    result = interventions(model, scenes, how, targets, progress=not quiet)
    summary = result.summary()
    parts = [{"method": m, **row} for m in result.mass for row in result.table(m)]
    out = Path(out)
    fileio.write_json(out / "interventions.json", {"meta": {**result.meta, "checkpoint": str(checkpoint),
                                                            "data": name, "split": split, "seed": seed},
                                                   "summary": summary, "parts": parts})
    fileio.write_text(out / "interventions.csv", table_csv(parts))
    for method in result.mass:
        console.table(f"{method}: {name} {split}, {n_images} scenes, {targets} class",
                      ["part", "probability drop", "map mass", "n"],
                      [[r["part"], r["drop"], r["mass"], r["n"]] for r in result.table(method)])
    console.table("checks (mean over scenes)", ["method", "single deletion ρ", "top part", "background mass"],
                  [[r["method"], r["single_deletion"], r["top_part"], r["background_mass"]] for r in summary])
    click.echo(f"wrote {out / 'interventions.json'} and {out / 'interventions.csv'}")
