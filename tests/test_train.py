"""Training: determinism, resume equivalence, run folder contents, checkpoints, errors."""

import json

import pytest
import torch

from attnscope.errors import CheckpointError, InputError
from attnscope.models import checkpoint
from attnscope.train import TrainConfig, fit

TINY = dict(n=192, n_test=64, batch_size=32, epochs=3, quiet=True,
            model_cfg={"widths": [8, 16], "dropout": 0.2}, data_cfg={"size": 32, "digit_size": [12, 16]})


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_run_different_seed_differs(tmp_path):
    a = fit(TrainConfig(out=str(tmp_path / "a"), **TINY), until_epoch=1)
    b = fit(TrainConfig(out=str(tmp_path / "b"), **TINY), until_epoch=1)
    c = fit(TrainConfig(out=str(tmp_path / "c"), seed=1, **TINY), until_epoch=1)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert all(torch.equal(x, y) for x, y in zip(_params(a.model).values(), _params(b.model).values(), strict=True))
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    whole = fit(TrainConfig(out=str(tmp_path / "whole"), **TINY))
    fit(TrainConfig(out=str(tmp_path / "cut"), **TINY), until_epoch=1)
    resumed = fit(TrainConfig(out=str(tmp_path / "cut"), resume=True, **TINY))
    drop_time = lambda rs: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rs]
    assert drop_time(resumed.history) == drop_time(whole.history)
    for k, v in _params(whole.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_resume_drops_metrics_of_an_epoch_past_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    fit(TrainConfig(out=str(out), **TINY), until_epoch=2)
    (out / "checkpoints" / "epoch_002.safetensors").unlink()  # as if killed between metrics and checkpoint
    run = fit(TrainConfig(out=str(out), resume=True, **TINY))
    assert [r["epoch"] for r in run.history] == [1, 2, 3]
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_run_folder_and_checkpoint_round_trip(tmp_path):
    run = fit(TrainConfig(out=str(tmp_path), **{**TINY, "epochs": 1}))
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "model.json",
                 "checkpoints/epoch_001.safetensors"):
        assert (tmp_path / name).is_file(), name
    model, header = checkpoint.load(tmp_path)
    assert header["model"]["name"] == "smallcnn" and header["info"]["epoch"] == 1
    x = torch.rand(2, 3, 32, 32)
    run.model.eval()
    assert torch.equal(model(x), run.model(x))
    assert json.loads((tmp_path / "model.json").read_text())["model"] == header["model"]
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    fit(TrainConfig(out=str(tmp_path), **{**TINY, "epochs": 1}))
    with pytest.raises(InputError, match="--resume"):
        fit(TrainConfig(out=str(tmp_path), **{**TINY, "epochs": 1}))
    with pytest.raises(CheckpointError, match="no run to resume"):
        fit(TrainConfig(out=str(tmp_path / "empty"), resume=True, **TINY))
    with pytest.raises(InputError, match="different lr"):
        fit(TrainConfig(out=str(tmp_path), resume=True, **{**TINY, "epochs": 2}, lr=0.1))


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(optimizer="lbfgs"), dict(schedule="warm"), dict(lr=-1.0)])
def test_bad_config_raises(bad):
    with pytest.raises(InputError):
        TrainConfig(**bad)


def test_sgd_step_schedule_drops_lr(tmp_path):
    run = fit(TrainConfig(out=str(tmp_path), optimizer="sgd", schedule="step", lr=0.05, step_size=1, gamma=0.1,
                          **{**TINY, "epochs": 2}))
    assert run.history[0]["lr"] == pytest.approx(0.005) and run.history[1]["lr"] == pytest.approx(0.0005)
