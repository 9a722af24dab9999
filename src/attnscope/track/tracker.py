"""`AttentionTracker`: record attention maps of a model on a fixed probe set while it trains, from any loop.

    tracker = AttentionTracker("runs/mine", probe=(images, labels, boxes), how=("gradcam", "saliency"), every=100)
    tracker.epoch_end(model, epoch=0, step=0)             # the untrained model
    for epoch in range(epochs):
        for x, y in loader:
            ...; optimizer.step(); step += 1
            tracker.log(loss=loss.item())                  # the loop's own scalars, beside the maps
            tracker.step(model, step=step)                 # records when step % every == 0; cheap otherwise
        tracker.epoch_end(model, epoch=epoch + 1, step=step)
    tracker.close()

Each snapshot explains the probe with all methods in one `explain` call (so they share their passes)
and stores the maps with their measures (`measures.py`) in `<folder>/track` (`store.py`). Any
registered method works by name, post-hoc or intrinsic. Recording never changes training: it runs
under a forked RNG, and `explain` leaves the model as it found it. Under torch.distributed only
rank 0 records; the other ranks' calls return at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnscope.deprecated import moved
from attnscope.errors import AttnscopeError, InputError
from attnscope.explain import HOW_KEYWORDS, Explainer, as_explainer, into_how
from attnscope.explain.multimodal import Caption
from attnscope.explain.spec import ALWAYS_RECORDED
from attnscope.modules import device_of, unwrap
from attnscope.track.board import Board
from attnscope.track.causal import CausalMeasures, evaluating, logit_scorer
from attnscope.track.measures import DEFAULT, checked_measures, measure, rank_maps
from attnscope.track.probe import ProbeSpec, as_probe, same_probe
from attnscope.track.store import TrackStore, roundtrip

TARGETS = ("label", "predicted")
FOLDER = "track"


class AttentionTracker:
    """Record maps explained as `how` says (an `Explainer`, or method names) on `probe` into the store
    `<folder>/track` (and `attnscope report folder`).

    `probe`: a `Probe`, or `(images (P, C, H, W), labels (P,))`, or `(images, labels, boxes)` with boxes
    None, (P, 4) (region "box"), or {region name: (P, 4)}. `every`: `step()` records every N steps
    (None: only `epoch_end()` records). `targets`: explain the true "label" or the "predicted" class (the
    `how`'s targets if it has some). `resume`: continue the store already in `folder`
    (same settings and probe, else `InputError`); without it an existing store is an error.
    `steps_per_epoch`: gives step snapshots a fractional epoch when `step()` is not told one.
    `seed`: stochastic methods (SmoothGrad) draw from (seed, step), so a resumed run repeats them.
    `probe_source`: where the probe images came from, for the report (default: the `Probe`'s own
    `source`, set by `probe_from`). `causal`: a `CausalMeasures` adds the faithfulness measures of
    `causal.py` (blank-out, exact part removal, attention substitution, ViT sinks). `tensorboard`: also log the
    measures, the scalars and map images to `<folder>/tensorboard` (needs the `tensorboard` package).
    `measures`: the declared metrics (`ats.list("metrics")`) taken on every snapshot, by name (`measures.py`); those
    that ask the model (e.g. "blankout_rho") score the true class's logit (`targets`).
    """

    @moved("how", HOW_KEYWORDS, into_how)
    def __init__(
        self,
        folder: str | Path,
        probe: ProbeSpec | None = None,
        how: Explainer | str | Sequence[str] = ("gradcam",),
        every: int | None = None,
        targets: str = "label",
        resume: bool = False,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        probe_source: str | None = None,
        tensorboard: bool = False,
        measures: str | Sequence[str] = DEFAULT,
        causal: CausalMeasures | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.measures = checked_measures(measures)
        self.probe = as_probe(probe)
        self.how = checked_settings(how, every, targets)
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise InputError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.every, self.targets = every, targets
        self.resume, self.steps_per_epoch, self.seed = resume, steps_per_epoch, int(seed)
        self.probe_source = probe_source or self.probe.source or "given to the tracker"
        self.board = Board.check() if tensorboard else None  # fails now if tensorboard is missing
        self.causal = causal
        if causal is not None and "blankout_rho" in self.measures:
            raise InputError("blankout_rho is both a measure and part of causal= (CausalMeasures records it on its own "
                             "grid): keep one")
        self.store: TrackStore | None = None
        self.main = True  # False on the ranks > 0 of a distributed run: they record nothing
        self._begun = self._closed = self._model_checked = False
        self._previous: dict[str, torch.Tensor] | None = None  # ranks of the last epoch snapshot's maps
        self._last: tuple[int, dict[str, torch.Tensor]] = (-1, {})  # step and ranks of the last snapshot
        self._at: tuple[int, float | None] | None = None  # (step, epoch) of the last call, for `log`
        self._scalars: dict[int, dict[str, Any]] = {}  # step → row, written at snapshots and close
        self._unsaved = False

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the recorded series (stored in the index; a resumed run must match it)."""
        record = self.how.settings()  # methods, layer, options, batch_size; its other fields where set
        others = {k: v for k, v in record.items() if k not in ALWAYS_RECORDED}
        return {"methods": record["methods"], "probe": int(self.probe.images.shape[0]), "every": self.every,
                "targets": self.targets, "layer": record["layer"], "options": record["options"],
                "batch_size": record["batch_size"], "seed": self.seed, "measures": self.measures,
                **({"how": others} if others else {}),
                **({"causal": self.causal.settings} if self.causal is not None else {})}

    @property
    def methods(self) -> list[str]:
        """The names of the methods recorded."""
        return list(self.how.methods)

    # -- what a training loop calls ------------------------------------------------------------

    def step(self, model: nn.Module, step: int, epoch: float | None = None) -> dict[str, Any] | None:
        """After optimizer step `step`: record a snapshot if `step` is a multiple of `every`.

        Returns the snapshot's measures, or None when none was due. `epoch`: its place on the report's
        axis (default step / steps_per_epoch when that is known).
        """
        if self.every is None:
            raise InputError("this tracker has every=None: it records only at epoch_end(); pass every=N to "
                             "record every N steps from step()")
        self._begin(step)
        self._place(step, self._epoch_of(step, epoch))
        if not self.main:
            return None
        if step % self.every or self.store.entry(step) is not None:
            self._check_model(model)
            return None
        return self._record(model, step, "step", self._at[1])

    def epoch_end(self, model: nn.Module, epoch: float, step: int) -> dict[str, Any] | None:
        """At the end of epoch `epoch` (0: before training), after `step` optimizer steps: record a snapshot.

        A step snapshot already taken at `step` (same weights) becomes the epoch's. Returns its measures.
        """
        self._begin(step)
        self._place(step, epoch)
        if not self.main:
            return None
        entry = self.store.entry(step)
        if entry is None:
            measures = self._record(model, step, "epoch", epoch)
        else:
            if entry["kind"] != "epoch" or entry["epoch"] != epoch:
                self.store.update(step, kind="epoch", epoch=epoch)
            last_step, last_ranked = self._last
            self._previous = last_ranked if last_step == step else rank_maps(self.store.maps(step))
            measures = entry["measures"]
        self.flush()
        return measures

    def log(self, step: int | None = None, epoch: float | None = None, **scalars: float) -> None:
        """Record the loop's own scalars (e.g. loss=..., acc=...) at `step` (default: the last step given).

        Values are numbers (or one-element tensors); NaN and ±inf are kept as null. Several calls at
        one step add to one row. Written at every snapshot and at `close()`.
        """
        if step is None:
            if self._at is None:
                raise InputError("log() needs a step: pass step=..., or call step()/epoch_end() first")
            step, epoch = self._at[0], self._at[1] if epoch is None else epoch
        if not scalars:
            raise InputError("log() needs at least one scalar, e.g. tracker.log(loss=...)")
        values = {name: _scalar(name, value) for name, value in scalars.items()}  # bad values: nothing written
        self._begin(step)
        if not self.main:
            return
        row = self._scalars.setdefault(step, {"step": step, "epoch": None})
        if epoch is not None or row["epoch"] is None:
            row["epoch"] = self._epoch_of(step, epoch)
        row.update(values)
        self._unsaved = True
        if self.board is not None:
            self.board.scalars("scalars", step, values)

    def _place(self, step: int, epoch: float | None) -> None:
        """Remember where the loop is (for `log`); scalars logged at `step` without an epoch get this one."""
        self._at = (step, epoch)
        row = self._scalars.get(step)
        if row is not None and row["epoch"] is None and epoch is not None:
            row["epoch"], self._unsaved = epoch, True

    def flush(self) -> None:
        """Write the logged scalars (and TensorBoard's events) now."""
        if self.main and self.store is not None and self._unsaved:
            self.store.write_scalars(self._scalars.values())
            self._unsaved = False
        if self.board is not None:
            self.board.flush()

    def close(self) -> None:
        """Write what is pending; later calls raise."""
        if not self._closed:
            self.flush()
            if self.board is not None:
                self.board.close()
            self._closed = True

    def __enter__(self) -> AttentionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the store -----------------------------------------------------------------------------

    def _begin(self, step: int) -> None:
        """At the first call: open or create the store; on resume, forget what was recorded after `step`."""
        if self._closed:
            raise InputError("the tracker is closed")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InputError(f"step must be an int >= 0 (optimizer steps taken), got {step!r}")
        if self._begun:
            return
        self.main = _is_main_process()
        if self.main:
            self.store = self._open_store(step)
            if self.board is not None:
                self.board.open(self.folder / "tensorboard", purge_step=step or None)
        self._begun = True

    def _open_store(self, step: int) -> TrackStore:
        folder = self.folder / FOLDER
        if not TrackStore.exists(folder):
            return TrackStore.create(folder, self.settings, self.probe, self.steps_per_epoch, self.probe_source)
        if not self.resume:
            raise InputError(f"{folder} already holds a tracker store; pass resume=True to continue it, "
                             "or choose another folder")
        store = TrackStore.open(folder)
        stored = store.settings
        diff = [k for k in self.settings if k in stored and _jsonish(self.settings[k]) != _jsonish(stored[k])]
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} (now {self.settings[k]!r})" for k in diff)
            raise InputError(f"the tracker store in {folder} was recorded with other settings ({shown}); "
                             "resume with the same settings, or record into another folder")
        if not same_probe(store.probe(), self.probe):
            raise InputError(f"the tracker store in {folder} was recorded on another probe set; resume with the "
                             "same images, labels and boxes, or record into another folder")
        store.truncate(step)  # later snapshots belong to steps that are trained again
        self._scalars = {row["step"]: row for row in store.scalars()}
        epochs = [e for e in store.snapshots if e["kind"] == "epoch"]
        self._previous = rank_maps(store.maps(epochs[-1]["step"])) if epochs else None
        return store

    # -- recording -----------------------------------------------------------------------------

    def _record(self, model: nn.Module, step: int, kind: str, epoch: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        maps = self._explain(model, self.probe.images, step)
        predictions = maps.predicted.cpu()  # the shared pass's logits: no extra forward
        values = {k: roundtrip(m.values) for k, m in maps.items()}  # (P, H, W) each, as the store keeps them
        ranked = rank_maps(values)
        targets = self.probe.labels if self.targets == "label" else predictions
        core = unwrap(model)
        with evaluating(core):  # the measures that ask the model run it in eval mode, no gradients
            measures = measure(values, self.probe, predictions, ranked=ranked, previous_ranked=self._previous,
                               measures=self.measures, scorer=logit_scorer(core, targets))
        if self.causal is not None:
            measures.update(self.causal(core, self.probe.images, targets, values, self.probe.regions))
        seconds = time.perf_counter() - started
        self.store.add({"step": step, "epoch": epoch, "kind": kind, "measures": measures,
                        "seconds": round(seconds, 4)}, values, predictions)
        self._last = (step, ranked)
        if kind == "epoch":
            self._previous = ranked  # what `change` of later snapshots compares with
        if self.board is not None:
            self.board.snapshot(step, measures, self.probe, values)
        self.flush()
        return measures

    def _explain(self, model: nn.Module, images: torch.Tensor, step: int):
        """`explain` of the probe (or a part of it) under an RNG forked and seeded from (seed, step)."""
        if not isinstance(model, nn.Module):
            raise InputError(f"the tracker explains a torch.nn.Module, got {type(model).__name__}")
        core = unwrap(model)  # never a DDP forward: its backward would wait for the other ranks
        device = device_of(core)
        n = images.shape[0]
        targets = self.probe.labels[:n].to(device) if self.targets == "label" else None
        if self.probe.texts is not None:  # a captioner's probe: the map of each text's last word
            targets = Caption(list(self.probe.texts[:n]), last=True)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + step)
            try:
                found = self.how(core, images.to(device), targets)
            except (AttnscopeError, RuntimeError, ValueError, TypeError, IndexError) as e:
                if self._model_checked:
                    raise
                context = f"the tracker cannot explain this model on its probe images {tuple(self.probe.images.shape)}"
                if isinstance(e, AttnscopeError):  # keep the engine's typed error, say what was being explained
                    e.args = (f"{context}: {e}", *e.args[1:])
                    raise
                raise InputError(f"{context}: {type(e).__name__}: {e}") from e
        self._model_checked = True
        return found

    def _check_model(self, model: nn.Module) -> None:
        """At the first call that records nothing: explain one probe image, so a model the tracker cannot
        explain fails now rather than at the first due snapshot."""
        if not self._model_checked:
            self._explain(model, self.probe.images[:1], 0)

    def _epoch_of(self, step: int, epoch: float | None) -> float | None:
        if epoch is not None:
            return round(float(epoch), 4)
        return round(step / self.steps_per_epoch, 4) if self.steps_per_epoch else None


def checked_settings(how: Explainer | str | Sequence[str], every: int | None, targets: str) -> Explainer:
    """`how` as an `Explainer` (unknown methods fail before any training), `every` and `targets` checked
    (`InputError`, `UnknownNameError`)."""
    if isinstance(how, (list, tuple)) and not how:
        raise InputError("the tracker needs at least one method")
    how = as_explainer(how)
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise InputError(f"every must be an int >= 1 (steps), or None to record only at epoch_end, got {every!r}")
    if targets not in TARGETS:
        raise InputError(f"targets must be one of {TARGETS}, got {targets!r}")
    return how


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _scalar(name: str, value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InputError(f"scalar {name!r} must be a number or a one-element tensor, got shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"scalar {name!r} must be a number, got {type(value).__name__}")
    return float(value) if math.isfinite(value) else None


def _jsonish(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
