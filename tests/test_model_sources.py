"""Any model from one string (registered, torchvision, timm:NAME, module:factory) and any common weights file."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import attnscope as ats
from attnscope.cli import cli, main
from attnscope.errors import CheckpointError, InputError, UnknownNameError
from attnscope.models import sources
from attnscope.models.weights import read_state_dict, sha256

FACTORY = '''
import torch
from torch import nn

def tiny(width=4, classes=3):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))

def not_a_model():
    return 42
'''


@pytest.fixture()
def user_code(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def small_resnet_state(classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return ats.models.get("resnet18", num_classes=classes).state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module-prefix", "safetensors"])
def test_weights_files_are_unwrapped_and_the_class_count_read_from_the_head(tmp_path, wrap) -> None:
    state = small_resnet_state(7)
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        saved = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
                 "module-prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}}}[wrap]
        torch.save(saved, path)
    model, info = sources.build("resnet18", weights=str(path))
    assert model.fc.out_features == 7 and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert info["source"] == {"kind": "registered", "name": "resnet18", "options": {}, "num_classes": 7,
                              "weights": str(path), "sha256": sha256(path), "random_weights": False}


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_resnet_state(2), "optimizer": nn.Linear(2, 2)}, path)  # a module: a pickle
    with pytest.raises(CheckpointError, match=r"evil.pth holds pickled Python objects \(torch.nn.modules.linear"):
        read_state_dict(path)


def test_weights_that_do_not_fit_name_the_first_keys_in_one_line(tmp_path) -> None:
    path = tmp_path / "w.pth"
    state = small_resnet_state(4)
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        sources.build("resnet34", weights=str(path))
    message = str(e.value)
    assert "\n" not in message and len(message) < 600
    assert "missing (" in message and "layer1.0.conv1.weight" in message and "unexpected (1): extra.weight" in message


def test_any_torchvision_classifier_timm_and_user_factories(user_code) -> None:
    tv_model, tv_info = sources.build("shufflenet_v2_x0_5", num_classes=3)  # not one of the registered names
    assert tv_model.fc.out_features == 3 and tv_info["source"]["random_weights"]
    timm_model, timm_info = sources.build("timm:resnet10t", num_classes=2, options={"drop_rate": 0.1})
    assert timm_model.fc.out_features == 2 and timm_model.drop_rate == 0.1
    assert timm_info["source"]["kind"] == "timm"
    mine, info = sources.build(f"{user_code}:tiny", options={"width": 5})
    assert mine[0].out_channels == 5 and info["model"] == {"name": "my_models:tiny", "config": {"width": 5}}


@pytest.mark.parametrize("source, options, error, needle", [
    ("timm:resnet_nine", {}, UnknownNameError, "unknown timm model 'resnet_nine'"),
    ("no_such_module_xyz:build", {}, InputError, "cannot import 'no_such_module_xyz'"),
    ("my_models:missing", {}, InputError, "has no callable 'missing'"),
    ("my_models:not_a_model", {}, InputError, "returned int, not a torch.nn.Module"),
    ("my_models:tiny", {"depth": 2}, InputError, "cannot build 'my_models:tiny' with options {'depth': 2}"),
    ("swin_q", {}, UnknownNameError, "Did you mean"),
])
def test_bad_sources_are_typed_one_line_errors(user_code, source, options, error, needle) -> None:
    with pytest.raises(error, match=None) as e:
        sources.build(source, options=options)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_any_model_records_its_source_and_warns_about_random_weights(tmp_path, user_code) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--model", f"{user_code}:tiny", "--model-opt", "width=6",
                                      "--images", "clutter", "--n", "2", "--out", str(out), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: my_models:tiny has random weights" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "factory" and manifest["source"]["random_weights"]
    assert manifest["warnings"][0].startswith("my_models:tiny has random weights")


def test_cli_weights_are_recorded_with_their_sha256(tmp_path, user_code) -> None:
    torch.manual_seed(0)
    model, _ = sources.build(f"{user_code}:tiny")
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--model", f"{user_code}:tiny", "--weights", str(path),
                                      "--images", "clutter", "--n", "2", "--out", str(out), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["weights"] == str(path) and source["sha256"] == sha256(path) and not source["random_weights"]


@pytest.mark.parametrize("args, needle", [
    (["--model", "timm:resnet_nine"], "unknown timm model"),
    (["--model", "no_such_module_xyz:build"], "cannot import"),
    (["--model", "resnet18", "--weights", "WRONG"], "does not fit the model"),
    (["--model", "resnet18", "--weights", "missing.pth"], "weights file not found"),
])
def test_cli_source_errors_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, needle) -> None:
    if "WRONG" in args:
        torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
        args = [str(tmp_path / "wrong.pth") if a == "WRONG" else a for a in args]
    with pytest.raises(SystemExit) as e:
        main(["explain", *args, "--images", "clutter", "--n", "1", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
