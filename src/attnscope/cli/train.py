"""`attnscope train`: train a registered model on a registered data set; writes a run folder."""

from __future__ import annotations

import click

from attnscope.cli import cli
from attnscope.cli.options import parse_list, parse_settings


@cli.command("train")
@click.option("--model", default="smallcnn", show_default=True, help="Model name (see `attnscope train --list`).")
@click.option("--data", default="clutter", show_default=True, help="Data set name.")
@click.option("--out", default="runs/train", show_default=True, help="Run folder to write.")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--n", "--n-train", "n", default=10_000, show_default=True, type=int,
              help="Training samples (under torchrun write --n-train: torchrun claims --n).")
@click.option("--n-test", default=2_000, show_default=True, type=int, help="Test samples.")
@click.option("--batch-size", default=64, show_default=True, type=int, help="Global batch size.")
@click.option("--optimizer", default="adamw", show_default=True, type=click.Choice(["adamw", "sgd"]))
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--momentum", default=0.9, show_default=True, type=float, help="SGD momentum.")
@click.option("--weight-decay", default=5e-4, show_default=True, type=float)
@click.option("--schedule", default="onecycle", show_default=True,
              type=click.Choice(["onecycle", "cosine", "step", "constant"]))
@click.option("--step-size", default=1, show_default=True, type=int, help="Epochs between LR drops (step).")
@click.option("--gamma", default=0.5, show_default=True, type=float, help="LR factor per drop (step).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of initialisation and shuffling.")
@click.option("--data-seed", default=0, show_default=True, type=int, help="Seed of the generated data.")
@click.option("--attention", type=click.Choice(["soft", "hard"]), default=None,
              help="Show, Attend and Tell's attention (model sat); the same as --model-opt attention=...")
@click.option("--model-opt", multiple=True, metavar="KEY=VALUE", help="Model option, e.g. widths=[16,32,64].")
@click.option("--data-opt", multiple=True, metavar="KEY=VALUE", help="Data set option, e.g. size=96.")
@click.option("--task-opt", multiple=True, metavar="KEY=VALUE", help="Task option (loss settings).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--workers", default=0, show_default=True, type=int, help="Data loader worker processes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--track", default=None, metavar="METHODS",
              help="Record maps of these methods (e.g. gradcam,saliency,ltpa) on a probe set during training.")
@click.option("--probe", default=64, show_default=True, type=int, help="Probe images the tracker explains.")
@click.option("--track-every", default=None, type=int, metavar="STEPS",
              help="Also record every STEPS optimizer steps (default: at epoch ends only).")
@click.option("--track-split", default="test", show_default=True, type=click.Choice(["test", "train"]),
              help="Split the probe images come from.")
@click.option("--tensorboard", is_flag=True, help="Also log tracked measures and maps to OUT/tensorboard.")
@click.option("--guide", default=None, metavar="NAME",
              help="Attention guidance loss: rrr, cam, ltpa (classifiers); sat (captioners, per-word boxes).")
@click.option("--guide-weight", default=None, type=float, help="Weight λ of the guidance loss (default: the guide's).")
@click.option("--guide-region", default="box", show_default=True, metavar="REGION",
              help="Where attention is allowed: box (the object's), mask (its pixels), or not-decoy "
                   "(all but the decoy patch).")
@click.option("--list", "list_", is_flag=True, help="List model and data set names, then exit.")
def train_command(model, data, out, epochs, n, n_test, batch_size, optimizer, lr, momentum, weight_decay,
                  schedule, step_size, gamma, seed, data_seed, attention, model_opt, data_opt, task_opt, device,
                  workers, resume, quiet, track, probe, track_every, track_split, tensorboard, guide, guide_weight,
                  guide_region, list_) -> None:
    """Train MODEL on DATA; checkpoints each epoch (safetensors + JSON), metrics.jsonl, --resume.

    Runs unchanged under `torchrun --nproc_per_node=N` (DistributedDataParallel; rank 0 writes).
    With --track, maps of a probe set are recorded into OUT/track during training (see `attnscope report`).
    """
    from attnscope import data as datasets
    from attnscope import models
    from attnscope.guide import GUIDES
    from attnscope.train import TrainConfig, fit

    if list_:
        click.echo("models: " + ", ".join(models.names()))
        click.echo("data:   " + ", ".join(datasets.names()))
        click.echo("guides: " + ", ".join(GUIDES.names()))
        return
    model_cfg = parse_settings(model_opt, "--model-opt")
    if attention is not None:
        model_cfg["attention"] = attention
    config = TrainConfig(
        model=model, data=data, out=out, epochs=epochs, n=n, n_test=n_test, batch_size=batch_size,
        optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        step_size=step_size, gamma=gamma, seed=seed, data_seed=data_seed, device=device, workers=workers,
        resume=resume, quiet=quiet, model_cfg=model_cfg,
        data_cfg=parse_settings(data_opt, "--data-opt"), task_cfg=parse_settings(task_opt, "--task-opt"),
        guide=guide, guide_weight=guide_weight, guide_region=guide_region,
    )
    models.MODELS.get(model)  # unknown names fail before any work
    datasets.DATASETS.get(data)
    if guide is not None:
        GUIDES.get(guide)
    callbacks = tracking(out, resume, track, probe, track_every, track_split, tensorboard)
    run = fit(config, callbacks=callbacks)
    if run.world.main and run.history:
        click.echo(f"trained {model} on {data}: {run.history[-1]} → {out}")


def tracking(out: str, resume: bool, methods: str | None, probe: int, every: int | None, split: str,
             tensorboard: bool) -> tuple:
    """The tracker the options ask for; on --resume without --track, the run's own tracker continues."""
    from pathlib import Path

    from attnscope.errors import InputError
    from attnscope.track import FitTracker, TrackStore

    folder = Path(out) / "track"
    if methods is None:
        if resume and TrackStore.exists(folder):
            return (FitTracker.from_store(folder, tensorboard=tensorboard),)
        if tensorboard or every is not None:
            raise InputError("--tensorboard and --track-every go with --track METHODS")
        return ()
    return (FitTracker(parse_list(methods, "--track"), probe=probe, every=every, split=split, tensorboard=tensorboard),)
