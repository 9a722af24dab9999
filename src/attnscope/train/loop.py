"""The training loop: deterministic given a seed, resumable at epoch boundaries, DDP-aware.

Determinism: every epoch re-seeds torch from (seed, epoch, rank) and shuffles with a sampler
seeded from (seed, epoch), so a run resumed from the checkpoint of epoch k repeats the
uninterrupted run exactly. Under `torchrun`, each process takes an equal share of each global
batch (DistributedSampler) and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from attnscope import console, data, fileio, models
from attnscope.errors import CheckpointError, InputError, TrainingError
from attnscope.models import checkpoint
from attnscope.train import (
    captioning,  # noqa: F401  (registers the "captioning" task)
    distributed,
    multimodal,  # noqa: F401  (registers the "contrastive" and "transformer-captioning" tasks)
    state,
)
from attnscope.train.config import TrainConfig
from attnscope.train.tasks import TASKS, Task


@dataclass
class Run:
    """What callbacks see: the run as it stands."""

    config: TrainConfig
    out: Path
    model: nn.Module  # unwrapped (not the DDP wrapper)
    task: Task
    train_data: Dataset
    test_data: Dataset
    device: torch.device
    world: distributed.World
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    stop: bool = False  # a callback sets it to end training after the current epoch (early stopping)


class Callback(Protocol):
    """Optional hooks; each may be left out. `on_epoch_end` may return extra metrics for the record.

    `check` runs before anything is written: settings that cannot work raise there, not mid-run.
    """

    def check(self, run: Run) -> None: ...
    def on_fit_start(self, run: Run) -> None: ...
    def on_step_end(self, run: Run) -> None: ...
    def on_epoch_end(self, run: Run) -> dict[str, Any] | None: ...


def fit(config: TrainConfig, callbacks: tuple[Callback, ...] = (), until_epoch: int | None = None) -> Run:
    """Train as `config` says; write the run folder (see README, "Where results go").

    `until_epoch` stops after that epoch, leaving a run that `resume=True` continues exactly.
    """
    device = distributed.pick_device(config.device)
    world = distributed.setup(device)
    try:
        return _fit(config, callbacks, device, world, until_epoch or config.epochs)
    finally:
        distributed.teardown(world)


def _fit(config: TrainConfig, callbacks: tuple[Callback, ...], device: torch.device, world: distributed.World,
         until_epoch: int) -> Run:
    out = Path(config.out)
    if config.batch_size % world.size:
        raise InputError(f"batch size {config.batch_size} does not split evenly over {world.size} processes")
    if world.main:
        _check_out(out, config)
    world.barrier()
    train_data = Cached(data.get(config.data, "train", config.n, seed=config.data_seed, **config.data_cfg))
    test_data = Cached(data.get(config.data, "test", config.n_test, seed=config.data_seed, **config.data_cfg))
    task: Task = TASKS.get(getattr(models.MODELS.get(config.model), "task", None) or train_data.kind)(config)
    getattr(task, "check", lambda _data: None)(train_data)  # bad settings fail before anything is written

    torch.manual_seed(config.seed)
    model = models.get(config.model, **{**task.model_kwargs(train_data), **config.model_cfg}).to(device)
    if getattr(train_data, "class_names", None) is not None:  # saved in its checkpoints' spec
        model.class_names = tuple(train_data.class_names)
    trained = _parallel(model, device, world)
    sampler = DistributedSampler(train_data, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(train_data, batch_size=config.batch_size // world.size, sampler=sampler,
                        num_workers=config.workers, collate_fn=task.collate)
    optimizer = _optimizer(config, model)
    scheduler = _scheduler(config, optimizer, len(loader))

    run = Run(config, out, model, task, train_data, test_data, device, world)
    getattr(task, "check_model", lambda _model: None)(model)
    for cb in callbacks:
        getattr(cb, "check", lambda r: None)(run)
    if config.resume:
        _resume(run, optimizer, scheduler)
    elif world.main:
        fileio.write_json(out / "config.json", config.to_dict())
    for cb in callbacks:
        getattr(cb, "on_fit_start", lambda r: None)(run)

    for epoch in range(run.epoch, min(until_epoch, config.epochs)):
        torch.manual_seed(config.seed * 1_000_003 + epoch * 1_009 + world.rank)  # (seed, epoch, rank)
        sampler.set_epoch(epoch)
        record = _train_epoch(run, trained, loader, (optimizer, scheduler), callbacks, epoch)
        run.epoch = epoch + 1
        if world.main:
            model.eval()
            scores = task.evaluate(model, test_data, device, config.batch_size)
            record.update({f"test_{k}": v for k, v in scores.items()})
            for cb in callbacks:
                record.update(getattr(cb, "on_epoch_end", lambda r: None)(run) or {})
            _save_epoch(run, optimizer, scheduler, record)
            if not config.quiet:
                console.console.print(epoch_line(record, config.epochs), highlight=False, markup=False,
                                      soft_wrap=True)
        run.history.append(record)
        world.barrier()
        if _all_reduce({"stop": float(run.stop)}, world)["stop"] > 0:  # callbacks run on rank 0 only
            break
    return run


def _parallel(model: nn.Module, device: torch.device, world: distributed.World) -> nn.Module:
    """What the steps train: the model itself, or under torchrun its DistributedDataParallel (SyncBatchNorm on GPUs)."""
    if not world.distributed:
        return model
    trained = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(trained, device_ids=ids)


def _train_epoch(run: Run, trained: nn.Module, loader: DataLoader, stepping: tuple[torch.optim.Optimizer, Any],
                 callbacks: tuple[Callback, ...], epoch: int) -> dict[str, Any]:
    """One epoch of optimiser steps on `trained`; its record (loss, the task's rates, summed over processes)."""
    optimizer, scheduler = stepping
    config, world = run.config, run.world
    trained.train()
    sums: dict[str, float] = {"loss": 0.0}
    started = time.perf_counter()
    with console.progress(len(loader), f"epoch {epoch + 1}/{config.epochs}", world.main and not config.quiet) as bar:
        for batch in loader:
            loss, stats = run.task.loss(trained, batch, run.device)
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at step {run.step + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.step += 1
            sums["loss"] += loss.item() * stats["count"]
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v
            bar.advance(1, loss=sums["loss"] / sums["count"], **_rates(sums))
            for cb in callbacks:
                getattr(cb, "on_step_end", lambda r: None)(run)
    sums = _all_reduce(sums, world)
    return {
        "epoch": epoch + 1,
        "step": run.step,
        "lr": scheduler.get_last_lr()[0],
        "train_loss": sums["loss"] / sums["count"],
        **{f"train_{k}": v for k, v in _rates(sums).items()},
        "train_time_s": time.perf_counter() - started,
    }


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """`epoch 2/5 (step 250): train loss 0.41, acc 0.87, time 12.3 s | test loss 0.39, acc 0.88 | lr 0.0012`."""
    groups: dict[str, list[str]] = {"train": [], "test": [], "": []}
    for key, value in record.items():
        if key in ("epoch", "step"):
            continue
        group, _, name = key.partition("_") if key.split("_")[0] in ("train", "test") else ("", "", key)
        unit = " s" if name.endswith("_s") else ""
        name = name.removesuffix("_s").replace("_", " ")
        shown = f"{value:{'.3g' if unit else '.4g'}}" if isinstance(value, float) else str(value)
        groups[group].append(f"{name} {shown}{unit}")
    parts = [f"{group} {', '.join(items)}".strip() for group, items in groups.items() if items]
    return f"epoch {record['epoch']}/{epochs} (step {record['step']}): " + " | ".join(parts)


def _rates(sums: dict[str, float]) -> dict[str, float]:
    """Per-image rates of the summable statistics, e.g. `correct` → `acc`."""
    names = {"correct": "acc"}
    return {names.get(k, k): v / sums["count"] for k, v in sums.items() if k not in ("loss", "count")}


def _all_reduce(sums: dict[str, float], world: distributed.World) -> dict[str, float]:
    if not world.distributed:
        return sums
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def _save_epoch(run: Run, optimizer: torch.optim.Optimizer, scheduler: Any, record: dict[str, Any]) -> None:
    """Metrics line, then training state, then the run's current model (each atomic)."""
    fileio.append_jsonl(run.out / "metrics.jsonl", record)
    state.save_state(run.out / "checkpoints" / state.state_name(run.epoch), run.model, optimizer, scheduler,
                     run.epoch, run.config.to_dict())
    info = {"epoch": run.epoch, "data": run.config.data, "data_cfg": run.config.data_cfg,
            "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float))}}
    checkpoint.save(run.model, run.out / checkpoint.RUN_WEIGHTS, info)


def _check_out(out: Path, config: TrainConfig) -> None:
    has_run = (out / "config.json").exists() or (out / "checkpoints").exists()
    if config.resume and not has_run:
        raise CheckpointError(f"--resume: no run to resume in {out}")
    if not config.resume and has_run:
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def _resume(run: Run, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    path = state.latest_state(run.out / "checkpoints")
    if path is None:
        raise CheckpointError(f"--resume: no checkpoint in {run.out / 'checkpoints'}")
    header = state.load_state(path, run.model, optimizer, scheduler)
    try:
        saved = TrainConfig.from_dict(header["config"])
    except (InputError, TypeError) as e:
        raise CheckpointError(f"{path}: the training state's config is not a valid run config: {e}") from None
    diff = saved.differences(run.config)
    if diff:
        raise InputError(f"--resume: the run in {run.out} was trained with different {', '.join(diff)}")
    run.epoch = int(header["epoch"])
    run.step = scheduler.last_epoch
    if run.epoch >= run.config.epochs and run.world.main:
        console.note(f"{run.out} has already trained {run.epoch} epochs and --epochs is {run.config.epochs}: "
                     "nothing to train (raise --epochs to continue)")
    metrics = run.out / "metrics.jsonl"
    if metrics.exists():  # drop lines of an epoch that ran past its last checkpoint
        lines = _metrics_lines(metrics)
        run.history = [r for r in lines if r["epoch"] <= run.epoch]
        if run.world.main:
            fileio.write_text(metrics, "".join(json.dumps(r) + "\n" for r in run.history))
    if run.world.main:
        fileio.write_json(run.out / "config.json", run.config.to_dict())


def _metrics_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl; a line that is not a record with an integer epoch is a CheckpointError."""
    records = []
    for number, record in fileio.read_jsonl(path, CheckpointError):
        if not isinstance(record.get("epoch"), int):
            raise CheckpointError(f"{path}:{number} is not a metrics record with an integer \"epoch\"")
        records.append(record)
    return records


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; a model's `param_groups()` (if it has one) may
    give groups of parameters their own learning rate: `lr_scale` times the run's."""
    params = param_groups(model, config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the model's `param_groups()` with `lr = lr_scale · lr`, or one group."""
    hook = getattr(model, "param_groups", None)
    if hook is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    groups = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": lr * float(g.get("lr_scale", 1.0))}
              for g in hook()]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    listed = [id(p) for g in groups for p in g["params"]]
    if len(listed) != len(set(listed)) or set(listed) != trainable:
        raise InputError(f"{type(model).__name__}.param_groups() must list every trainable parameter exactly once")
    return groups


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """Per-step LR factor: one-cycle (20 % linear warm-up, cosine decay), cosine, step or constant."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        warm = max(1, int(0.2 * total))
        def f(s: int) -> float:
            if s < warm:
                return 0.1 + 0.9 * s / warm
            return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    elif config.schedule == "cosine":
        f = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    elif config.schedule == "step":
        f = lambda s: config.gamma ** (s // (config.step_size * steps_per_epoch))
    else:
        f = lambda s: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


class Cached(Dataset):
    """Memoise a generated data set's samples: the first epoch generates, later epochs reuse."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self._cache = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self._cache:
            self._cache[index] = self.dataset[index]
        return self._cache[index]

    def __getattr__(self, name: str) -> Any:  # num_classes, kind, vocabulary, ...
        if name in ("dataset", "_cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
