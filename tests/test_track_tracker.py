"""The tracker inside `fit` (`FitTracker`): what it records is `explain` of the model at that step, in one shared
call, and recording never changes training."""

from __future__ import annotations

import json

import pytest
import torch

from attnscope import models
from attnscope.errors import InputError, UnknownNameError
from attnscope.explain import explain
from attnscope.models import checkpoint
from attnscope.track import FitTracker, TrackStore, measure
from attnscope.train import fit
from tiny_runs import METHODS, tiny_config, tracked_run


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The tiny run, tracked every 2 steps, counting the tracker's explain calls."""
    calls = []

    from attnscope.explain import spec

    run_explain = spec.explain_with

    def counting(how, *args):
        calls.append(how.methods)
        return run_explain(how, *args)

    out = tmp_path_factory.mktemp("tracked") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spec, "explain_with", counting)
        run, _ = tracked_run(out)
    return out, run, calls


def test_snapshots_at_start_every_n_steps_and_epoch_ends(tracked):
    out, run, calls = tracked
    store = TrackStore.open(out / "track")
    assert [e["step"] for e in store.snapshots] == [0, 2, 3, 4, 6, 8, 9]  # 3 steps per epoch
    assert [e["kind"] for e in store.snapshots] == ["epoch", "step", "epoch", "step", "epoch", "step", "epoch"]
    assert [e["epoch"] for e in store.snapshots] == [0, 0.6667, 1, 1.3333, 2, 2.6667, 3]
    assert store.index["steps_per_epoch"] == 3
    # Step 6 is both a multiple of 2 and epoch 2's end: recorded once, as the epoch's snapshot.
    assert calls == [METHODS] * 7  # one explain call per snapshot, all methods together
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["track_s"] > 0 for r in records)


def test_stored_maps_are_explain_of_the_model_at_that_step(tracked):
    out, run, _ = tracked
    store = TrackStore.open(out / "track")
    probe = store.probe()
    torch.manual_seed(run.config.seed)  # the loop's initialisation
    initial = models.get("smallcnn", num_classes=10, **run.config.model_cfg).eval()
    final, _ = checkpoint.load(out)
    for step, model in ((0, initial), (9, final)):
        expected = explain(model, probe.images, METHODS, targets=probe.labels)
        for key, values in store.maps(step).items():
            peak = expected[key].values.abs().flatten(1).amax(1)[:, None, None]
            assert ((values - expected[key].values).abs() <= 2**-11 * peak + 1e-12).all(), (step, key)
        assert torch.equal(store.predictions(step), model(probe.images).argmax(1))


def test_measures_can_be_recomputed_from_the_store(tracked):
    out, _, _ = tracked
    store = TrackStore.open(out / "track")
    probe, previous = store.probe(), None
    for entry in store.snapshots:
        maps, predictions = store.read(entry["step"])
        assert measure(maps, probe, predictions, previous) == pytest.approx(entry["measures"], abs=1e-6)
        if entry["kind"] == "epoch":
            previous = maps
    last = store.snapshots[-1]["measures"]
    assert {"cam/energy_box@box", "gradcam/pointing@decoy", "saliency/entropy", "saliency/change",
            "agreement/cam~gradcam", "probe_acc"} <= set(last)


def test_tracking_does_not_change_training(tracked, tmp_path):
    out, run, _ = tracked
    plain = fit(tiny_config(tmp_path / "plain"))
    for (name, a), b in zip(run.model.state_dict().items(), plain.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [r["test_loss"] for r in run.history] == [r["test_loss"] for r in plain.history]


def test_resume_with_other_tracker_settings_is_refused(tmp_path):
    tracked_run(tmp_path / "run", until_epoch=1, epochs=2)
    other = FitTracker(["saliency"], probe=8, every=2)
    with pytest.raises(InputError, match="other settings.*methods"):
        fit(tiny_config(tmp_path / "run", epochs=2, resume=True), callbacks=(other,))
    same = FitTracker.from_store(tmp_path / "run" / "track")
    fit(tiny_config(tmp_path / "run", epochs=2, resume=True), callbacks=(same,))
    assert [e["step"] for e in TrackStore.open(tmp_path / "run" / "track").snapshots] == [0, 2, 3, 4, 6]


def test_bad_tracker_settings_fail_before_training(tmp_path):
    with pytest.raises(UnknownNameError, match="gradcamm"):
        FitTracker(["gradcamm"])
    for bad in (dict(how=[]), dict(probe=0), dict(every=0), dict(targets="true"), dict(split="val")):
        with pytest.raises(InputError):
            FitTracker(**{"how": ["saliency"], **bad})
    with pytest.raises(InputError, match="only 16"):
        fit(tiny_config(tmp_path / "big"), callbacks=(FitTracker(["saliency"], probe=17),))


def test_tensorboard_logging_or_a_clear_error(tmp_path, monkeypatch):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install tensorboard"):
            FitTracker(["saliency"], tensorboard=True)
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tiny_config(tmp_path / "tb", epochs=1), callbacks=(FitTracker(["saliency"], probe=4, tensorboard=True),))
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("track/saliency/energy_box@box")] == [0, 3]
    assert [e.step for e in events.Images("maps/saliency")] == [0, 3]
    assert events.Images("maps/saliency")[0].width == 4 * 32  # 4 probe images side by side
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)
    with pytest.raises(InputError, match="pip install tensorboard"):
        FitTracker(["saliency"], tensorboard=True)


def test_intrinsic_and_post_hoc_methods_are_tracked_alike(tmp_path):
    ltpa = dict(model="ltpa", model_cfg={"widths": [4, 8, 8, 8], "estimators": 2, "global_dim": 8}, epochs=1)
    tracked_run(tmp_path / "ltpa", every=None, methods=("ltpa", "gradcam"), **ltpa)
    store = TrackStore.open(tmp_path / "ltpa" / "track")
    maps = store.maps(3)
    assert set(maps) == {"ltpa", "ltpa/stages.1", "ltpa/stages.2", "gradcam"}
    model, _ = checkpoint.load(tmp_path / "ltpa")
    probe = store.probe()
    expected = explain(model, probe.images, ("ltpa", "gradcam"), targets=probe.labels)
    for key, values in maps.items():
        peak = expected[key].values.abs().flatten(1).amax(1)[:, None, None]
        assert ((values - expected[key].values).abs() <= 2**-11 * peak + 1e-12).all(), key
    assert "agreement/ltpa/stages.1~gradcam" in store.snapshots[-1]["measures"]
