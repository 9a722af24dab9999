"""`FitTracker`: the callback through which `attnscope.train.fit` (and `attnscope train --track`) drives an
`AttentionTracker` — the same object a user's own loop calls."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnscope.deprecated import moved
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import HOW_KEYWORDS, Explainer, into_how
from attnscope.track.board import Board
from attnscope.track.causal import CausalMeasures, parts_from
from attnscope.track.measures import DEFAULT, checked_measures
from attnscope.track.probe import probe_from
from attnscope.track.store import Probe, TrackStore
from attnscope.track.tracker import FOLDER, AttentionTracker, checked_settings

if TYPE_CHECKING:  # the train layer sits above track; only its type is named here
    from attnscope.train.loop import Run

SPLITS = ("test", "train")


class FitTracker:
    """Record maps explained as `how` says on a probe set during `fit`: at step 0, every epoch end, and every
    `every` steps.

    `probe`: that many first images of the `split` ("test" or "train"), or a `Probe`. `causal`: the faithfulness
    measures (`CausalMeasures`); on a generated data set without their `parts`, the probe's own are drawn. The other
    arguments are the tracker's (`AttentionTracker`).
    """

    @moved("how", HOW_KEYWORDS, into_how)
    def __init__(
        self,
        how: Explainer | str | Sequence[str],
        probe: int | Probe = 64,
        every: int | None = None,
        targets: str = "label",
        split: str = "test",
        tensorboard: bool = False,
        probe_source: str | None = None,
        measures: str | Sequence[str] = DEFAULT,
        causal: CausalMeasures | None = None,
    ) -> None:
        if isinstance(probe, int) and probe < 1:
            raise InputError(f"probe must be >= 1 images, got {probe}")
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        self.how = checked_settings(how, every, targets)  # fail before any training
        measures = checked_measures(measures)
        if causal is not None and "blankout_rho" in measures:
            raise InputError("blankout_rho is both a measure and part of causal= (CausalMeasures records it on its own "
                             "grid): keep one")
        if tensorboard:
            Board.check()  # a missing package fails now, not after the run folder is written
        self.probe, self.split, self.probe_source = probe, split, probe_source
        self.kwargs = dict(every=every, targets=targets, tensorboard=tensorboard, measures=measures)
        self.causal, self._wants_parts = causal, causal is not None and causal.parts is None
        self.tracker: AttentionTracker | None = None
        self._seconds = 0.0

    @classmethod
    def from_store(cls, folder: str | Path, tensorboard: bool = False) -> FitTracker:
        """A callback that continues the series of the store in `folder` with its own settings and probe."""
        store = TrackStore.open(folder)
        s = store.settings
        if not isinstance(s["layer"], str):
            raise InputError(f"the tracker store in {folder} was recorded with a layer given as a module or Layer "
                             f"({s['layer']!r}); continue it from Python with the same `how`")
        how = Explainer(tuple(s["methods"]), s["layer"], s["options"], batch_size=s.get("batch_size"),
                        **{k: v for k, v in s.get("how", {}).items() if k in ("output", "differentiable")})
        causal = CausalMeasures.from_settings(s["causal"]) if s.get("causal") else None
        tracker = cls(how, store.probe(), s["every"], s["targets"], tensorboard=tensorboard,
                      probe_source=store.index["probe"].get("source"), measures=s.get("measures", DEFAULT),
                      causal=causal)
        tracker._wants_parts = bool(s.get("causal") and s["causal"].get("parts"))
        return tracker

    # -- fit's callback hooks --------------------------------------------------------------------

    def check(self, run: Run) -> None:
        """Before the run writes anything: a probe larger than its split or a method that does not apply raises."""
        if not run.world.main or TrackStore.exists(run.out / FOLDER):  # a resumed store holds its probe
            return
        available = len(run.test_data if self.split == "test" else run.train_data)
        if isinstance(self.probe, int) and self.probe > available:
            raise InputError(f"probe of {self.probe} images asked for, but the {self.split} split has only "
                             f"{available} (lower --probe or raise --n-test)")
        for spec in self.how.specs:
            reason = spec.applies(run.model)
            if reason is not None:
                raise NotApplicableError(f"cannot track {spec.name!r} on {type(run.model).__name__}: {reason}")

    def on_fit_start(self, run: Run) -> None:
        dataset = run.test_data if self.split == "test" else run.train_data
        if isinstance(self.probe, Probe):
            probe, source = self.probe, self.probe_source
        else:
            probe = probe_from(dataset, self.probe)
            source = f"the first {self.probe} images of the {self.split} split of {run.config.data}"
        causal = self.causal
        if causal is not None and self._wants_parts and hasattr(dataset, "without"):
            causal = causal.with_parts(parts_from(dataset, probe.images.shape[0]))  # the probe is the first images
        self.tracker = AttentionTracker(run.out, probe, self.how, resume=run.config.resume,
                                        steps_per_epoch=steps_per_epoch(run), seed=run.config.seed,
                                        probe_source=source, causal=causal, **self.kwargs)
        self._seconds = 0.0
        self._timed(self.tracker.epoch_end, run.model, epoch=run.epoch, step=run.step)  # step 0: untrained
        self._seconds = 0.0

    def on_step_end(self, run: Run) -> None:
        if self.tracker.every is not None:
            self._timed(self.tracker.step, run.model, step=run.step)

    def on_epoch_end(self, run: Run) -> dict[str, Any]:
        self._timed(self.tracker.epoch_end, run.model, epoch=run.epoch, step=run.step)
        seconds, self._seconds = self._seconds, 0.0
        return {"track_s": round(seconds, 4)}

    @property
    def store(self) -> TrackStore | None:
        return None if self.tracker is None else self.tracker.store

    def _timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        call(*args, **kwargs)
        self._seconds += time.perf_counter() - started


def steps_per_epoch(run: Run) -> int:
    """Optimizer steps per epoch of `run` (its loader: each of W processes takes ⌈N / W⌉ samples)."""
    world, n = run.world.size, len(run.train_data)
    return math.ceil(math.ceil(n / world) / (run.config.batch_size // world))


