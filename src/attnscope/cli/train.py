"""`attnscope train`: train a registered model on a registered data set; writes a run folder.

The run folder is written in place (a checkpoint per epoch) under the lock of `attnscope.outdir`. A new
run needs an absent or empty `--out` (or `--overwrite` over an earlier training run); a run that fails
before its first checkpoint removes what it wrote, and `--resume` of a folder without a checkpoint
starts it afresh.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from attnscope import fileio, outdir
from attnscope.cli import cli
from attnscope.cli.common import (
    Compute,
    How,
    Output,
    compute_options,
    explain_options,
    output_options,
    seed_option,
)
from attnscope.cli.options import COUNT, SEED, WORKERS, parse_list, parse_settings
from attnscope.train.config import OPTIMIZERS, SCHEDULES, TrainConfig

D = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # the CLI's defaults are the config's

# What a training run writes into its folder (sub-folders end in "/"); `attnscope report` adds report.html.
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "checkpoints/", "track/",
             "tensorboard/")


@cli.command("train")
@click.option("--model", default=D["model"], show_default=True, help="Model name (see `attnscope train --list`).")
@click.option("--data", default=D["data"], show_default=True, help="Data set name.")
@output_options("train", default=D["out"], help="Run folder to write.")
@click.option("--epochs", default=D["epochs"], show_default=True, type=COUNT)
@click.option("--n", "--n-train", "n", default=D["n"], show_default=True, type=COUNT,
              help="Training samples (under torchrun write --n-train: torchrun claims --n).")
@click.option("--n-test", default=D["n_test"], show_default=True, type=COUNT, help="Test samples.")
@click.option("--batch-size", default=D["batch_size"], show_default=True, type=COUNT, help="Global batch size.")
@click.option("--optimizer", default=D["optimizer"], show_default=True, type=click.Choice(OPTIMIZERS))
@click.option("--lr", default=D["lr"], show_default=True, type=float)
@click.option("--momentum", default=D["momentum"], show_default=True, type=float, help="SGD momentum.")
@click.option("--weight-decay", default=D["weight_decay"], show_default=True, type=float)
@click.option("--schedule", default=D["schedule"], show_default=True,
              type=click.Choice(SCHEDULES))
@click.option("--step-size", default=D["step_size"], show_default=True, type=COUNT,
              help="Epochs between LR drops (step).")
@click.option("--gamma", default=D["gamma"], show_default=True, type=float, help="LR factor per drop (step).")
@seed_option("Seed of initialisation and shuffling.")
@click.option("--data-seed", default=D["data_seed"], show_default=True, type=SEED, help="Seed of the generated data.")
@click.option("--attention", type=click.Choice(["soft", "hard"]), default=None,
              help="Show, Attend and Tell's attention (model sat); the same as --model-opt attention=...")
@click.option("--model-opt", multiple=True, metavar="KEY=VALUE", help="Model option, e.g. widths=[16,32,64].")
@click.option("--data-opt", multiple=True, metavar="KEY=VALUE", help="Data set option, e.g. size=96.")
@click.option("--task-opt", multiple=True, metavar="KEY=VALUE", help="Task option (loss settings).")
@click.option("--workers", default=D["workers"], show_default=True, type=WORKERS, help="Data loader worker processes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@explain_options(methods=None, targets="label", batch_size=None, methods_flag="--track", batch_alias=False,
                 methods_help="Record maps of these methods (e.g. gradcam,saliency,ltpa) on a probe set during "
                              "training (--layer, --method-opt, --targets, --explain-batch: how).")
@click.option("--probe", default=64, show_default=True, type=COUNT, help="Probe images the tracker explains.")
@click.option("--track-every", default=None, type=COUNT, metavar="STEPS",
              help="Also record every STEPS optimizer steps (default: at epoch ends only).")
@click.option("--track-split", default="test", show_default=True, type=click.Choice(["test", "train"]),
              help="Split the probe images come from.")
@click.option("--track-measures", default=None, metavar="METRICS",
              help="Declared metrics taken on each tracked map (default pointing,energy_box,entropy; e.g. add "
                   "blankout_rho, which asks the model).")
@click.option("--track-faithfulness", is_flag=True,
              help="Also record faithfulness per snapshot: blank-out and exact part-removal references, attention "
                   "substitution, ViT sinks (docs/learning.md).")
@click.option("--tensorboard", is_flag=True, help="Also log tracked measures and maps to OUT/tensorboard.")
@click.option("--guide", default=None, metavar="NAME",
              help="Attention guidance loss: rrr, cam, ltpa (classifiers); sat (captioners, per-word boxes).")
@click.option("--guide-weight", default=None, type=float, help="Weight λ of the guidance loss (default: the guide's).")
@click.option("--guide-region", default=D["guide_region"], show_default=True, metavar="REGION",
              help="Where attention is allowed: box (the object's), mask (its pixels), or not-decoy "
                   "(all but the decoy patch).")
@click.option("--list", "list_", is_flag=True, help="List model and data set names, then exit.")
@compute_options()
def train_command(model, data, output: Output, epochs, n, n_test, batch_size, optimizer, lr, momentum, weight_decay,
                  schedule, step_size, gamma, seed, data_seed, attention, model_opt, data_opt, task_opt, workers,
                  resume, how: How, probe, track_every, track_split, track_measures, track_faithfulness, tensorboard,
                  guide, guide_weight, guide_region, list_, compute: Compute) -> None:
    """Train MODEL on DATA; checkpoints each epoch (safetensors + JSON), metrics.jsonl, --resume.

    Runs unchanged under `torchrun --nproc_per_node=N` (DistributedDataParallel; rank 0 writes).
    With --track, maps of a probe set are recorded into OUT/track during training (see `attnscope report`).
    """
    from attnscope import data as datasets
    from attnscope import models
    from attnscope.guide import GUIDES
    from attnscope.train import TrainConfig, fit
    from attnscope.train.loop import epoch_line

    if list_:
        click.echo("models: " + ", ".join(models.names()))
        click.echo("data:   " + ", ".join(datasets.names()))
        click.echo("guides: " + ", ".join(GUIDES.names()))
        return
    model_cfg = parse_settings(model_opt, "--model-opt")
    if attention is not None:
        model_cfg["attention"] = attention
    out = str(output.path)
    config = TrainConfig(
        model=model, data=data, out=out, epochs=epochs, n=n, n_test=n_test, batch_size=batch_size,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        step_size=step_size, gamma=gamma, seed=seed, data_seed=data_seed, device=compute.device, workers=workers,
        resume=resume, quiet=compute.quiet, model_cfg=model_cfg,
        data_cfg=parse_settings(data_opt, "--data-opt"), task_cfg=parse_settings(task_opt, "--task-opt"),
        guide=guide, guide_weight=guide_weight, guide_region=guide_region,
    )
    models.MODELS.get(model)  # unknown names fail before any work
    datasets.DATASETS.get(data)
    if guide is not None:
        GUIDES.get(guide)
    compute.torch_device()  # an unusable --device fails before the run folder is written
    with claimed(Path(out), resume, output.overwrite) as resume:
        callbacks = tracking(out, resume, how, probe, track_every, track_split, tensorboard, track_measures,
                             track_faithfulness)
        run = fit(dataclasses.replace(config, resume=resume), callbacks=callbacks)
    if run.world.main and run.history:
        click.echo(f"trained {model} on {data} → {out}: {epoch_line(run.history[-1], epochs)}")


@contextmanager
def claimed(out: Path, resume: bool, overwrite: bool) -> Iterator[bool]:
    """Hold run folder `out` for one training; yields whether it resumes (no checkpoint yet: it starts afresh).

    A fresh run that fails before its first checkpoint leaves the folder as it found it; one that replaces
    an earlier run (`--overwrite`) puts that run back. Only the first process of a torchrun job writes.
    """
    from attnscope import console
    from attnscope.errors import CheckpointError, InputError
    from attnscope.train.state import latest_state

    if resume and overwrite:
        raise InputError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    afresh = resume and latest_state(out / "checkpoints") is None  # the same answer in every process
    resume = resume and not afresh
    if os.environ.get("RANK", "0") != "0":  # the other processes of a torchrun job never write
        yield resume
        return
    if afresh and not _is_run(out):
        raise CheckpointError(f"--resume: no run to resume in {out}")
    replace = False if resume or afresh else outdir.check(out, "train", overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with outdir.lock(out):
        outdir.clear_stale(out, "train")
        if afresh:
            outdir.owned(out, "train")  # its marker, every entry inside, nothing else in it: or nothing is removed
            console.note(f"{out} has no checkpoint (its run stopped in the first epoch): starting it afresh")
            outdir.remove_listed(out, RUN_FILES, "train")
        elif resume:
            for entry in RUN_FILES:  # a run continued is written through none of its names' links
                outdir.contained(out, entry, "train")
        old = fileio.move_aside(out) if replace else None
        created = not out.exists()
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            outdir.write_marker(out, "train", RUN_FILES)
        try:
            yield resume
        except BaseException:
            if not resume and latest_state(out / "checkpoints") is None:  # nothing worth keeping was written
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    outdir.remove_listed(out, RUN_FILES, "train")
                if old is not None:
                    os.rename(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _is_run(out: Path) -> bool:
    """A folder an earlier `attnscope train` wrote: its marker, never a file name a user's folder may have."""
    marker = outdir.read_marker(out)
    return marker is not None and marker["command"] == "train"


def tracking(out: str, resume: bool, how: How, probe: int, every: int | None, split: str,
             tensorboard: bool, measures: str | None = None, faithfulness: bool = False) -> tuple:
    """The tracker the options ask for; on --resume without --track, the run's own tracker continues."""
    from pathlib import Path

    from attnscope.errors import InputError
    from attnscope.track import FitTracker, TrackStore

    folder = Path(out) / "track"
    if how.methods is None:
        if how.options or how.layer != "auto" or how.batch_size is not None or how.targets != "label":
            raise InputError("--layer, --method-opt, --targets and --explain-batch say how --track METHODS explains; "
                             "give --track")
        if resume and TrackStore.exists(folder):
            return (FitTracker.from_store(folder, tensorboard=tensorboard),)
        if tensorboard or every is not None or measures is not None or faithfulness:
            raise InputError("--tensorboard and --track-every go with --track METHODS, as do --track-measures and "
                             "--track-faithfulness")
        return ()
    from attnscope.track import CausalMeasures
    from attnscope.track.measures import DEFAULT

    taken = DEFAULT if measures is None else parse_list(measures, "--track-measures")
    return (FitTracker(how.explainer(), probe=probe, every=every, targets=how.targets, split=split,
                       tensorboard=tensorboard, measures=taken,
                       causal=CausalMeasures(images=32) if faithfulness else None),)
