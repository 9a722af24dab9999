"""`attnscope interventions`: remove each object (or the decoy patch) of generated test scenes, measure
the model's probability drop, and check whether each method's mass per object ranks the objects as
the drops do (single deletion), and how much mass falls outside every object (background).

The two files are written into a temporary folder that is renamed to `--out` (`attnscope.outdir`): an
existing `--out` is replaced only with `--overwrite`, and only if it holds an earlier interventions output.
"""

from __future__ import annotations

import click

from attnscope.cli import cli
from attnscope.cli.common import (
    Compute,
    How,
    ModelSource,
    Output,
    compute_options,
    explain_options,
    model_options,
    output_options,
    seed_option,
)
from attnscope.cli.options import COUNT
from attnscope.errors import InputError


@cli.command("interventions")
@model_options()
@output_options("interventions", help="Folder for interventions.json and interventions.csv.")
@click.option("--data", default=None, help="clutter, clutter-decoy or scenes (default: the checkpoint's).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]),
              help="Split to draw the scenes from (clutter-decoy: the decoy encodes the label only in train).")
@click.option("--n", default=None, type=COUNT, help="Scenes to intervene on [32].")
@click.option("--images", "old_n", default=None, type=COUNT, hidden=True)
@explain_options(methods="gradcam,saliency,guided-backprop,ig", targets="predicted", batch_size=None,
                 batch_alias=False, methods_help="Methods to check, comma-separated.")
@seed_option("Seed of the generated scenes.")
@compute_options()
def interventions_command(source: ModelSource, output: Output, data: str | None, split: str, n: int | None,
                          old_n: int | None, how: How, seed: int, compute: Compute) -> None:
    """Ground-truth interventions on CHECKPOINT: one table per method (probability drop and map mass
    per part), and the single-deletion, top-part and background checks of every method."""
    from attnscope import data as datasets
    from attnscope import fileio
    from attnscope.evaluate.interventions import SCENES, interventions
    from attnscope.report.sanity import table_csv
    from attnscope.report.terminal import print_interventions

    if how.targets not in ("predicted", "label"):
        raise InputError("--targets: `attnscope interventions` explains the predicted class (predicted) or the "
                         "digit's (label), the parts it removes being the digit's; a class by name or index: "
                         "`attnscope explain --targets NAME`")
    if n is not None and old_n is not None:
        raise InputError("--n and --images are one option under two names; give one")
    n = next((v for v in (n, old_n) if v is not None), 32)
    if n < 1:
        raise InputError(f"--n must be >= 1 scenes, got {n}")
    output.check()
    model, header = source.load()
    model.to(compute.torch_device())
    name = data or header.get("info", {}).get("data")
    if name not in SCENES:
        raise InputError(f"interventions need generated scenes whose parts can be removed: --data "
                         f"{', '.join(SCENES)}, got {name!r}")
    cfg = dict(header.get("info", {}).get("data_cfg", {})) if data is None else {}
    scenes = SCENES[name](datasets.get(name, split, n, seed=seed, **cfg), n, progress=compute.progress)
    result = interventions(model, scenes, how.explainer(), how.targets, progress=compute.progress)
    parts = [{"method": m, **row} for m in result.mass for row in result.table(m)]
    with output.building() as partial:
        fileio.write_json(partial / "interventions.json", {
            "meta": {**result.meta, "checkpoint": source.source, "data": name, "split": split, "seed": seed},
            "summary": result.summary(), "parts": parts})
        fileio.write_text(partial / "interventions.csv", table_csv(parts))
    print_interventions(result, f"{name} {split}, {n} scenes, {how.targets} class")
    click.echo(f"wrote {output.path / 'interventions.json'} and {output.path / 'interventions.csv'}")
