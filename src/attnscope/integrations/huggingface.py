"""A Hugging Face `transformers.Trainer` callback that records attention maps while the model trains.

    Trainer(model, args, train_dataset=..., callbacks=[AttentionTrackerCallback(("gradcam",), probe=(x, y))])

It wraps an `AttentionTracker` writing into `<args.output_dir>/track` (or `folder`): snapshots at the
start, every `every_n_steps` optimizer steps and every epoch end; the values the Trainer logs (loss,
learning rate, ...) go into the store beside the maps; `attnscope report OUTPUT_DIR` draws it. The
model's forward must take the images first (`forward(pixel_values, ...)`) and return logits, a
`ModelOutput` or a dict with "logits". Resuming (`train(resume_from_checkpoint=...)`) continues the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnscope.explain import Explainer
from attnscope.integrations import missing, numbers
from attnscope.track import AttentionTracker
from attnscope.track.probe import ProbeSpec, as_probe
from attnscope.track.tracker import checked_settings

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise missing("transformers", "transformers") from e


class AttentionTrackerCallback(TrainerCallback):
    """Record maps explained as `how` says on `probe` (a `Probe` or `(images, labels[, boxes])`) during
    `Trainer.train`.

    Hugging Face data sets yield dicts, so the probe is given, not taken from them. `every_n_steps`:
    also record every N optimizer steps. Other keywords go to `AttentionTracker`.
    """

    def __init__(self, how: Explainer | str | Sequence[str] = ("gradcam",), probe: ProbeSpec | None = None,
                 folder: str | Path | None = None, every_n_steps: int | None = None, **tracker: Any) -> None:
        self.how = checked_settings(how, every_n_steps, tracker.get("targets", "label"))
        self.probe, self.folder, self.every, self.options = as_probe(probe), folder, every_n_steps, tracker
        self.tracker: AttentionTracker | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        folder = Path(self.folder) if self.folder is not None else Path(args.output_dir)
        self.tracker = AttentionTracker(folder, self.probe, self.how, every=self.every,
                                        resume=state.global_step > 0, seed=args.seed, **self.options)
        if state.global_step == 0:
            self.tracker.epoch_end(model, epoch=0, step=0)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.every is not None:
            self.tracker.step(model, step=state.global_step, epoch=state.epoch)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.tracker.epoch_end(model, epoch=round(state.epoch, 4), step=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        scalars = numbers(logs or {})
        scalars.pop("epoch", None)  # the row's own place, not a scalar
        scalars.pop("step", None)
        if scalars and self.tracker is not None:
            self.tracker.log(step=state.global_step, epoch=state.epoch, **scalars)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tracker.close()
