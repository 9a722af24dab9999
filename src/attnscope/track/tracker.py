"""`AttentionTracker`: a callback of `attnscope.train.fit` that records attention maps while a model learns.

At the start (step 0), at the end of every epoch and, with `every=N`, every N optimizer steps, it
explains a fixed probe set with the chosen methods in one `explain` call (so they share their
passes) and stores the maps with their measures (see `measures.py`) in the run's `track/` folder.
Any registered method works, post-hoc or intrinsic, by name. Recording never changes training:
it runs under a forked RNG, and `explain` leaves the model as it found it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from attnscope.errors import InputError
from attnscope.explain import explain
from attnscope.registry import METHODS
from attnscope.track.measures import measure, rank_maps
from attnscope.track.store import Probe, TrackStore, roundtrip

if TYPE_CHECKING:  # the train layer sits above track; only its type is named here
    from attnscope.train.loop import Run

TARGETS = ("label", "predicted")
SPLITS = ("test", "train")
FOLDER = "track"


class AttentionTracker:
    """Record maps of `methods` on a probe set of `probe` images (or a `Probe`) during `fit`.

    `every`: also record every N optimizer steps (None: epoch ends only). `targets`: explain the
    true "label" or the "predicted" class. `split`: where an int probe is taken from (its first
    images). `layer`, `options`, `batch_size` go to `explain`. `tensorboard`: also log the
    measures and map images to `<run>/tensorboard` (needs the `tensorboard` package).
    """

    def __init__(
        self,
        methods: str | Sequence[str],
        probe: int | Probe = 64,
        every: int | None = None,
        targets: str = "label",
        split: str = "test",
        layer: str = "auto",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        batch_size: int | None = None,
        tensorboard: bool = False,
    ) -> None:
        self.methods = [methods] if isinstance(methods, str) else list(methods)
        if not self.methods:
            raise InputError("the tracker needs at least one method")
        for name in self.methods:
            METHODS.get(name)  # unknown names fail before any training
        if isinstance(probe, int) and probe < 1:
            raise InputError(f"probe must be >= 1 images, got {probe}")
        if every is not None and every < 1:
            raise InputError(f"every must be >= 1 steps (or None), got {every}")
        if targets not in TARGETS:
            raise InputError(f"targets must be one of {TARGETS}, got {targets!r}")
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        self.probe, self.every, self.targets, self.split = probe, every, targets, split
        self.layer, self.options, self.batch_size = layer, {k: dict(v) for k, v in (options or {}).items()}, batch_size
        self._tensorboard = _tensorboard_writer_class() if tensorboard else None
        self.store: TrackStore | None = None
        self._probe: Probe | None = None
        self._previous: dict[str, torch.Tensor] | None = None  # ranks of the last epoch snapshot's maps
        self._last: tuple[int, dict[str, torch.Tensor]] = (-1, {})  # step and ranks of the last snapshot
        self._writer: Any = None
        self._epoch_seconds = 0.0

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the recorded series (stored in the index; a resumed run must match it)."""
        count = self.probe if isinstance(self.probe, int) else int(self.probe.images.shape[0])
        return {"methods": self.methods, "probe": count, "every": self.every, "targets": self.targets,
                "split": self.split, "layer": self.layer, "options": self.options, "batch_size": self.batch_size}

    @classmethod
    def from_store(cls, folder: str | Path, tensorboard: bool = False) -> AttentionTracker:
        """A tracker that continues the series of the store in `folder` with its own settings."""
        s = TrackStore.open(folder).settings
        return cls(s["methods"], s["probe"], s["every"], s["targets"], s["split"], s["layer"], s["options"],
                   s.get("batch_size"), tensorboard)

    # -- callback hooks ------------------------------------------------------------------------

    def on_fit_start(self, run: Run) -> None:
        if not run.world.main:
            return
        folder = run.out / FOLDER
        if TrackStore.exists(folder):
            self.store = TrackStore.open(folder)
            self._check_settings(self.store.settings, folder)
            self.store.truncate(run.step)  # later snapshots belong to an epoch that is run again
        else:
            probe = self.probe if isinstance(self.probe, Probe) else probe_from(self._dataset(run), self.probe)
            self.store = TrackStore.create(folder, self.settings, probe, steps_per_epoch(run))
        self._probe = self.store.probe()  # read back: a fresh and a resumed run explain the same tensors
        epochs = [e for e in self.store.snapshots if e["kind"] == "epoch"]
        self._previous = rank_maps(self.store.maps(epochs[-1]["step"])) if epochs else None
        if self._tensorboard is not None:
            self._writer = self._tensorboard(str(run.out / "tensorboard"), purge_step=run.step or None)
        if self.store.entry(run.step) is None:
            self._record(run, "epoch")
        self._epoch_seconds = 0.0

    def on_step_end(self, run: Run) -> None:
        if self.store is None or self.every is None or run.step % self.every:
            return
        if self.store.entry(run.step) is None:
            self._record(run, "step")

    def on_epoch_end(self, run: Run) -> dict[str, Any] | None:
        if self.store is None:
            return None
        entry = self.store.entry(run.step)
        if entry is None:
            self._record(run, "epoch")
        else:  # a step snapshot at the epoch's last step: same weights, so it is the epoch's snapshot
            self.store.update(run.step, kind="epoch", epoch=run.epoch)
            last_step, last_ranked = self._last
            self._previous = last_ranked if last_step == run.step else rank_maps(self.store.maps(run.step))
        seconds, self._epoch_seconds = self._epoch_seconds, 0.0
        if self._writer is not None:
            self._writer.flush()
        return {"track_s": round(seconds, 4)}

    # -- recording -----------------------------------------------------------------------------

    def _record(self, run: Run, kind: str) -> None:
        started = time.perf_counter()
        probe = self._probe
        images = probe.images.to(run.device)  # (P, C, H, W)
        targets = probe.labels.to(run.device) if self.targets == "label" else None
        devices = [run.device.index or 0] if run.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(run.config.seed * 1_000_003 + run.step)  # stochastic methods repeat on resume
            maps = explain(run.model, images, self.methods, targets=targets, layer=self.layer,
                           options=self.options or None, batch_size=self.batch_size)
            predictions = maps.predicted.cpu()  # the shared pass's logits: no extra forward
        values = {k: roundtrip(m.values) for k, m in maps.items()}  # (P, H, W) each, as the store keeps them
        ranked = rank_maps(values)
        measures = measure(values, probe, predictions, ranked=ranked, previous_ranked=self._previous)
        spe = self.store.index.get("steps_per_epoch") or 1
        epoch = run.epoch if kind == "epoch" else round(run.step / spe, 4)
        seconds = time.perf_counter() - started
        self.store.add({"step": run.step, "epoch": epoch, "kind": kind, "measures": measures,
                        "seconds": round(seconds, 4)}, values, predictions)
        self._last = (run.step, ranked)
        if kind == "epoch":
            self._previous = ranked  # what `change` of later snapshots compares with
        self._epoch_seconds += time.perf_counter() - started
        if self._writer is not None:
            _log_tensorboard(self._writer, run.step, measures, probe, values)

    def _dataset(self, run: Run) -> Dataset:
        return run.test_data if self.split == "test" else run.train_data

    def _check_settings(self, stored: Mapping[str, Any], folder: Path) -> None:
        ours = self.settings
        diff = [k for k in ours if _jsonish(ours[k]) != _jsonish(stored.get(k))]
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} (now {ours[k]!r})" for k in diff)
            raise InputError(f"the tracker store in {folder} was recorded with other settings ({shown}); "
                             "resume with the same --track settings, or without --track to keep the recorded ones")


def probe_from(dataset: Dataset, n: int) -> Probe:
    """The first `n` samples of a classification data set as a probe, with their boxes as regions.

    Regions: "box" when samples carry a `box`, "decoy" when the data set has a decoy patch.
    """
    if n > len(dataset):
        raise InputError(f"probe of {n} images asked for, but the data set has only {len(dataset)}")
    samples = [dataset[i] for i in range(n)]
    if not all(isinstance(s[1], int) for s in samples):
        raise InputError("the tracker explains classification data (samples of image, integer label, ...)")
    images = torch.stack([s[0] for s in samples]).float()  # (P, C, H, W)
    labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
    regions: dict[str, torch.Tensor] = {}
    if all(hasattr(s, "box") for s in samples):
        regions["box"] = torch.stack([s.box for s in samples]).long()
    if getattr(dataset, "decoy", False):
        regions["decoy"] = torch.stack([dataset.decoy_box(i) for i in range(n)]).long()
    return Probe(images, labels, regions)


def steps_per_epoch(run: Run) -> int:
    """Optimizer steps per epoch of `run` (its loader: each of W processes takes ⌈N / W⌉ samples)."""
    world, n = run.world.size, len(run.train_data)
    return math.ceil(math.ceil(n / world) / (run.config.batch_size // world))


def _jsonish(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _tensorboard_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def _log_tensorboard(writer: Any, step: int, measures: Mapping[str, float], probe: Probe,
                     values: Mapping[str, torch.Tensor], shown: int = 8) -> None:
    """Measures as scalars; per map key, the first `shown` probe images with the map over them."""
    from matplotlib import colormaps

    from attnscope.maps import normalize

    for key, value in measures.items():
        if value is not None:
            writer.add_scalar(f"track/{key}", value, step)
    images = probe.images[:shown].float().clamp(0, 1)  # (n, C, H, W)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    for key, maps in values.items():
        heat = torch.from_numpy(colormaps["jet"](normalize(maps[:shown]).numpy())[..., :3]).permute(0, 3, 1, 2)
        blended = 0.5 * images + 0.5 * heat.float()  # (n, 3, H, W)
        writer.add_image(f"maps/{key}", torch.cat(list(blended), dim=2), step)  # (3, H, n·W)
