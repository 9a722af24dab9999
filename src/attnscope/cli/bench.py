"""`attnscope bench`: the leaderboard of every applicable method × every selected metric column
(localisation, faithfulness, robustness, complexity) on test images, with time per image and, before it
starts, an estimate of how long it will take.

One body for both runs: `evaluate.image_scores` scores images per method and column. In memory it scores all
the images at once (`leaderboard` averages them) and the two files are written into a temporary folder
renamed to `--out` (`attnscope.outdir`); with `--stream` it scores shard by shard and the table comes from
the shards' sums (`stream.bench_dataset`), resumable.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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
from attnscope.cli.inputs import (
    ImageChoice,
    StreamChoice,
    TestImages,
    checkpoint_images,
    images_options,
    stream_options,
    world_of,
)
from attnscope.cli.options import COUNT
from attnscope.errors import InputError

FOLDER_NOTE = ("images of a folder have no boxes or masks: the localisation columns are not applicable, and each "
               "image is scored for the class the model predicts")


@cli.command("bench")
@model_options()
@output_options("bench", required=False, help="Folder for leaderboard.csv and .json (not with --estimate).")
@images_options(required=False, n=None, data_seed=None, fit=False,
                help="Test images to score: a count of the checkpoint's [32], a folder, an image or a data set "
                     "(--n).")
@click.option("--data", default=None, help="Data set of --images N, with boxes and masks (default: the checkpoint's).")
@stream_options("Score --images shard by shard (bounded memory), resumable, split across the processes of "
                "torchrun; the table from the shards' sums.")
@explain_options(methods="all", targets="label", batch_size=None, batch_alias=False,
                 methods_help="'all' applicable methods, or a comma list.")
@click.option("--metrics", default="default", show_default=True,
              help="Columns: 'default', 'all', groups (localisation, faithfulness, robustness, complexity) and "
                   "column names, comma-separated (see docs/sanity.md).")
@click.option("--tolerance", default=0.0, show_default=True, type=float, help="Pointing game tolerance (px).")
@click.option("--step", default=None, type=COUNT, help="Deletion/insertion pixels per step (default: one row).")
@click.option("--forward-batch", default=None, type=COUNT, help="Perturbed images per forward [256].")
@click.option("--batch-size", "old_forward_batch", default=None, type=COUNT, hidden=True)
@click.option("--perturbations", default=10, show_default=True, type=COUNT, help="Robustness: perturbed copies.")
@click.option("--radius", default=0.02, show_default=True, type=float, help="Robustness: noise radius U(-r, r).")
@seed_option("Seed of every random draw of the metrics.")
@click.option("--estimate", "estimate_only", is_flag=True, help="Print the time estimate and stop.")
@click.option("--preset", "preset_name", default="default", show_default=True,
              help="'fast': 5 one-pass methods, every group's cheapest columns, 8 curve steps, 3 robustness copies "
                   "(bench/README.md); options given explicitly win.")
@compute_options()
def bench_command(source: ModelSource, output: Output, images: ImageChoice, data: str | None, streaming: StreamChoice,
                  how: How, metrics: str, tolerance: float, step: int | None, forward_batch: int | None,
                  old_forward_batch: int | None, perturbations: int, radius: float, seed: int, estimate_only: bool,
                  preset_name: str, compute: Compute) -> None:
    """Score every applicable method (post-hoc and intrinsic) on CHECKPOINT's test images: against
    the digits' boxes and masks, by asking the model (deletion, insertion, ROAD, ...), by the maps'
    robustness to small perturbations and their complexity. Calibration rows bound each column."""
    from attnscope.evaluate import Settings
    from attnscope.evaluate.columns import select

    how, metrics, perturbations, chosen = _preset(preset_name, how, metrics, perturbations)
    settings = Settings(tolerance=tolerance, step=step, batch_size=_forward_batch(forward_batch, old_forward_batch),
                        seed=seed, perturbations=perturbations, radius=radius, progress=compute.progress)
    _check(output, settings, how, streaming, estimate_only)
    columns = select(metrics)
    if output.path is not None and not streaming.on:
        output.check()
    model, header = source.load()
    model.to(compute.torch_device())
    test = checkpoint_images(source, header, images, data, streaming.on)
    if chosen is not None and step is None and len(test.dataset):  # the preset's curve steps, in pixels
        settings = replace(settings, step=chosen.step(*test.dataset[0][0].shape[-2:]))
    predicted = how.targets == "predicted" or not hasattr(test.dataset, "data")
    meta = {"checkpoint": source.source, "data": test.name, "tolerance": tolerance, "step": settings.step,
            "targets": "predicted" if predicted else "label", "perturbations": perturbations, "radius": radius,
            "seed": seed}
    if streaming.on:
        meta = {**meta, "n": images.n, "data_seed": test.seed, "data_cfg": test.config, "stream": True}
        return _stream(model, test, how, columns, settings, {**meta, **source.recorded()},
                       predicted, output, streaming, compute)
    _in_memory(model, test, how, columns, settings, meta, predicted, output, estimate_only, compute)


def _preset(name: str, how: How, metrics: str, perturbations: int) -> tuple[How, str, int, Any]:
    """`how`, the columns and the robustness copies of the preset `name` (`evaluate.presets`) where the command line
    gave none of its own (an option given explicitly wins), and the preset (None: "default", nothing to change)."""
    from attnscope.evaluate.presets import preset

    chosen, source = preset(name), click.get_current_context().get_parameter_source
    given = lambda option: source(option) != click.core.ParameterSource.DEFAULT  # noqa: E731
    if name == "default":
        return how, metrics, perturbations, None
    if not given("methods") and chosen.methods is not None:
        how = replace(how, methods=tuple(chosen.methods))
        how.explainer()  # names, options and fields checked before any work
    return (how, metrics if given("metrics") else chosen.metrics,
            perturbations if given("perturbations") else chosen.perturbations, chosen)


def _forward_batch(value: int | None, old: int | None) -> int:
    if value is not None and old is not None:
        raise InputError("--forward-batch and --batch-size are one option under two names; give one")
    return next((v for v in (value, old) if v is not None), 256)


def _check(output: Output, settings: Any, how: How, streaming: StreamChoice, estimate_only: bool) -> None:
    """Refuse what cannot be run, before any work."""
    s = settings
    if (s.tolerance < 0 or (s.step is not None and s.step < 1) or s.batch_size < 1 or s.perturbations < 1
            or s.radius < 0):
        raise InputError(f"need --tolerance >= 0, --step >= 1, --forward-batch >= 1, --perturbations >= 1 and "
                         f"--radius >= 0, got {s.tolerance}, {s.step}, {s.batch_size}, {s.perturbations}, {s.radius}")
    refused = [(output.path is None and not estimate_only,
                "--out is required (or pass --estimate to only print the time estimate)"),
               (streaming.on and estimate_only, "--estimate times the in-memory run; leave out --stream"),
               (how.targets not in ("label", "predicted"), "--targets: `attnscope bench` scores the true class "
                                                           "(label) or the predicted one (predicted), whose boxes the "
                                                           "columns compare with; a class by name or index: "
                                                           "`attnscope explain --targets NAME`")]
    for bad, message in refused:
        if bad:
            raise InputError(message)


def _labels(model, images, labels, predicted: bool):
    """The class each image is scored for: its label, or the class the model predicts."""
    from attnscope.evaluate.robustness import logits_of

    return logits_of(model, images).argmax(1).cpu() if predicted else labels


def _in_memory(model, test: TestImages, how: How, columns: list[str], settings: Any, meta: dict[str, Any],
               predicted: bool, output: Output, estimate_only: bool, compute: Compute) -> None:
    """The body once, on every image in memory: the estimate, then the leaderboard (the means of its scores)."""
    from torch.utils.data import default_collate

    from attnscope import fileio
    from attnscope.evaluate import COLUMNS, estimate, leaderboard
    from attnscope.report.sanity import table_csv
    from attnscope.stream.bench import Scored

    _folder_note(how, predicted)
    items = Scored(test.dataset)
    batch = default_collate([items[i] for i in range(len(items))])
    images = batch["image"]
    labels = _labels(model, images, batch["label"], predicted)
    common = dict(how=how.for_model(model), metrics=columns, settings=settings,
                  mosaics=_mosaics(test, columns, len(images), settings.seed))
    truth = (batch.get("box"), batch.get("mask"))
    guess = estimate(model, images, labels, *truth, **common)
    parts = ", ".join(f"{g} {s:.0f} s" for g, s in guess.groups.items() if s >= 0.5)
    click.echo(f"estimated time: {guess.total:.0f} s (explaining {guess.explain:.0f} s{', ' + parts if parts else ''}; "
               f"a probe of {guess.measured_on} image, scaled to {len(images)})", err=True)
    if estimate_only:
        return
    board = leaderboard(model, images, labels, *truth, **common)
    lower = [c for c, up in board.higher_is_better().items() if not up]
    meta = {**meta, "images": len(images), "columns": board.columns, "lower_is_better": lower,
            "groups": {c: COLUMNS.get(c).group for c in board.columns}, "skipped": board.skipped,
            "estimated_s": round(guess.total, 1), "seconds": {k: round(v, 2) for k, v in board.seconds.items()}}
    with output.building() as partial:
        fileio.write_text(partial / "leaderboard.csv", table_csv(board.rows))
        fileio.write_json(partial / "leaderboard.json", {"meta": meta, "rows": board.rows})
    _show({"meta": meta, "rows": board.rows}, test.name, predicted)
    click.echo(f"wrote {output.path / 'leaderboard.csv'} and {output.path / 'leaderboard.json'}")


def _mosaics(test: TestImages, columns: list[str], n: int, seed: int) -> Any:
    """Focus's 2×2 mosaics of the test images' data set, when the focus column is asked for and it has labels."""
    if "focus" not in columns or not hasattr(test.dataset, "data"):
        return None
    from attnscope import data as datasets
    from attnscope.evaluate import Mosaics

    built = datasets.mosaics(datasets.get(test.name, "test", max(4 * n, 64), seed=0, **test.config), n, seed=seed)
    return Mosaics(built.images, built.labels, built.quadrants)


def _stream(model, test: TestImages, how: How, columns: list[str], settings: Any, meta: dict[str, Any],
            predicted: bool, output: Output, streaming: StreamChoice, compute: Compute) -> None:
    """The body shard by shard: `--images` through the leaderboard into `--out` (every process of torchrun
    calls it); the table from the shards' sums."""
    from attnscope.data.inputs import Unlabelled
    from attnscope.stream.bench import bench_dataset

    with world_of(model) as world:
        if world.main:
            _folder_note(how, predicted)
        dataset = Unlabelled(test.dataset) if predicted else test.dataset  # label −1: the predicted class
        result = bench_dataset(model, dataset, output.path, how.for_model(model), metrics=columns, settings=settings,
                               meta=meta, streaming=streaming.streaming(output.overwrite, compute.progress))
    if not world.main:
        return
    _show(result, test.name, predicted)
    out = output.path
    click.echo(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.json'} "
               f"(from {len(list((out / 'shards').iterdir()))} shards in shards/, manifest.json)")


def _folder_note(how: How, predicted: bool) -> None:
    if predicted and how.targets == "label":
        click.echo(FOLDER_NOTE, err=True)


def _show(board: dict[str, Any], data: str, predicted: bool) -> None:
    from attnscope.report.terminal import print_leaderboard

    print_leaderboard(board, data, "predicted class" if predicted else "true class")
    if board["meta"]["skipped"]:
        click.echo(f"left out (no ground truth for them): {', '.join(board['meta']['skipped'])}", err=True)
