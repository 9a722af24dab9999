"""A PyTorch Lightning callback that records attention maps while a `LightningModule` trains.

    trainer = Trainer(callbacks=[AttentionTrackerCallback(methods=("gradcam",), probe=64, every_n_steps=50)])

It wraps an `AttentionTracker`: the probe is given, or the first `probe` images of the datamodule's
validation (or training) data set; snapshots at the start, every `every_n_steps` optimizer steps and
every epoch end; the measures of each snapshot go to the trainer's loggers (`attnscope/<measure>`)
and the values the module logs (`self.log`) into the store beside the maps. `attnscope report FOLDER`
draws it. Resuming from a checkpoint (`fit(ckpt_path=...)`) continues the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from attnscope.errors import InputError
from attnscope.explain import Explainer
from attnscope.integrations import missing, numbers
from attnscope.track import AttentionTracker, probe_from
from attnscope.track.probe import ProbeSpec
from attnscope.track.tracker import checked_settings

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise missing("lightning", "lightning") from e

SPLITS = ("val", "train")


class AttentionTrackerCallback(pl.Callback):
    """Record maps explained as `how` says (an `Explainer` or method names) on a probe set during `Trainer.fit`
    into `folder/track`.

    `probe`: a `Probe`, `(images, labels[, boxes])`, or a number of first images of the datamodule's
    `split` ("val" or "train") data set. `folder`: default `<trainer.default_root_dir>/attnscope`.
    `every_n_steps`: also record every N optimizer steps. `model`: which module to explain, e.g.
    `lambda module: module.net` (default: the LightningModule, whose forward must return logits).
    Other keywords go to `AttentionTracker` (`targets`, `tensorboard`).
    """

    def __init__(
        self,
        how: Explainer | str | Sequence[str] = ("gradcam",),
        probe: ProbeSpec | int = 64,
        folder: str | Path | None = None,
        every_n_steps: int | None = None,
        split: str = "val",
        model: Callable[[pl.LightningModule], nn.Module] | None = None,
        **tracker: Any,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        self.how = checked_settings(how, every_n_steps, tracker.get("targets", "label"))
        self.probe, self.folder, self.every, self.split = probe, folder, every_n_steps, split
        self.select = model or (lambda module: module)
        self.options = tracker
        self.tracker: AttentionTracker | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = Path(self.folder) if self.folder is not None else Path(trainer.default_root_dir) / "attnscope"
        probe, source = self._probe(trainer)
        self.tracker = AttentionTracker(folder, probe, self.how, every=self.every,
                                        resume=trainer.ckpt_path is not None, seed=_seed(), probe_source=source,
                                        **self.options)
        if trainer.global_step == 0:
            self._logged(trainer, self.tracker.epoch_end(self.select(pl_module), epoch=0, step=0))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % max(1, trainer.log_every_n_steps) == 0:
            scalars = numbers(trainer.callback_metrics)
            if scalars:
                self.tracker.log(step=step, **scalars)
        if self.every is not None:
            batches = trainer.num_training_batches  # Lightning's own count of the epoch (also on resume)
            epoch = trainer.current_epoch + (batch_idx + 1) / batches if math.isfinite(batches) else None
            self._logged(trainer, self.tracker.step(self.select(pl_module), step=step, epoch=epoch))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch + 1
        scalars = numbers(trainer.callback_metrics)
        if scalars:
            self.tracker.log(step=step, epoch=epoch, **scalars)
        self._logged(trainer, self.tracker.epoch_end(self.select(pl_module), epoch=epoch, step=step))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.close()  # what was logged so far is kept; a resumed fit continues it

    def _probe(self, trainer: pl.Trainer) -> tuple[ProbeSpec, str | None]:
        if not isinstance(self.probe, int) or isinstance(self.probe, bool):
            return self.probe, None
        datamodule = trainer.datamodule
        if datamodule is None:
            raise InputError("probe=N takes the first N images of the datamodule's data; this fit has no "
                             "datamodule: pass probe=(images, labels[, boxes])")
        loader = datamodule.val_dataloader() if self.split == "val" else datamodule.train_dataloader()
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            raise InputError(f"the datamodule's {self.split} loader has no sized data set to take a probe from; "
                             "pass probe=(images, labels[, boxes])")
        return probe_from(dataset, self.probe), f"the first {self.probe} images of the datamodule's {self.split} data"

    @staticmethod
    def _logged(trainer: pl.Trainer, measures: Mapping[str, Any] | None) -> None:
        """The snapshot's measures to every logger of the trainer, at its step."""
        if measures:
            values = {f"attnscope/{k}": v for k, v in numbers(measures).items()}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)


def _seed() -> int:
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", 0))
