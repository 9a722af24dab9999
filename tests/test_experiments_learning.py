"""The study's own measure code (experiments/learning_sat.py, learning_runs.py) on hand-made inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(scope="module")
def learning():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import learning_runs
        import learning_sat

        yield learning_runs, learning_sat
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_box_mass_spreads_each_cell_over_its_pixels(learning) -> None:
    _, sat = learning
    alpha = torch.zeros(4)
    alpha[0], alpha[3] = 0.25, 0.75  # a 2 x 2 grid on an 8 px image: cells of 4 x 4 px
    assert sat.box_mass(alpha, (2, 2), (0, 0, 4, 4), 8) == pytest.approx(0.25)
    assert sat.box_mass(alpha, (2, 2), (2, 2, 6, 6), 8) == pytest.approx(0.25 / 4 + 0.75 / 4)  # a quarter of each
    assert sat.box_mass(alpha, (2, 2), (0, 0, 8, 8), 8) == pytest.approx(1.0)


def test_sat_snapshot_with_the_feature_cache_equals_the_encoder_run_each_time(learning) -> None:
    """The encoder's outputs computed once give the same measures as the encoder on every pass, and a changed
    encoder (not frozen) is run again, not served stale features."""
    import attnscope as ats
    from attnscope import data
    from attnscope.track.causal import evaluating

    _, sat = learning
    ds = data.get("scenes", "test", 6, seed=0, size=64, digit_size=(15, 23))
    samples = [ds[i] for i in range(6)]
    torch.manual_seed(0)
    model = ats.models.get("sat", vocab=data.DigitScenes.vocabulary().to_json())
    inputs = sat.scene_inputs(ds, samples)
    assert len(inputs) == 1 + max(len(s.objects) for s in samples)
    assert torch.equal(inputs[1][0], ds.without(0, 0))  # the first scene without its first object
    cache = sat.FeatureCache(inputs)
    runs: list[int] = []
    model.encoder.register_forward_hook(lambda *_: runs.append(1))
    with evaluating(model):
        plain = sat.snapshot(model, samples, inputs)
        assert len(runs) == 2 + len(inputs) - 1  # the scenes twice (own and uniform alpha), each removal once
        runs.clear()
        assert sat.snapshot(model, samples, inputs, cache) == plain and len(runs) == len(inputs)
        assert sat.snapshot(model, samples, inputs, cache) == plain and len(runs) == len(inputs)  # served
        next(model.encoder.parameters()).add_(0.5)
        changed = sat.snapshot(model, samples, inputs)
        runs.clear()
        assert sat.snapshot(model, samples, inputs, cache) == changed and len(runs) == len(inputs)
    assert changed != plain


def test_snapshots_every_third_of_an_epoch_and_resume(learning, tmp_path) -> None:
    runs, _ = learning
    runs.JOBS["tiny"] = {"model": "smallcnn", "model_cfg": {"widths": [4, 8]}, "data": "clutter", "n": 96, "n_test": 32,
                         "epochs": 1, "data_cfg": {"size": 32, "digit_size": [8, 12]}}
    try:
        folder = runs.train("tiny", 0, tmp_path, None)
    finally:
        del runs.JOBS["tiny"]
    snaps = json.loads((folder / "snaps" / "snaps.json").read_text())["snaps"]
    assert [s["step"] for s in snaps] == [0, 1, 2]  # 96 / 64 → 2 steps an epoch, every max(1, 2 // 3) = 1 step
    assert all((folder / "snaps" / f"{s['step']:06d}.safetensors").exists() for s in snaps)
    assert json.loads((folder / "done.json").read_text())["job"] == "tiny"
