"""Models by name, torchvision weights from local files only, checkpoints and their errors."""

import json

import pytest
import torch

from attnscope import models
from attnscope.errors import CheckpointError, InputError, UnknownNameError
from attnscope.models import checkpoint
from attnscope.models.smallcnn import SmallCNN


def test_smallcnn_is_gap_plus_linear_so_cam_is_exact():
    model = models.get("smallcnn", widths=[4, 8]).eval()
    x = torch.rand(2, 3, 16, 16)
    feats = model.features(x)  # (2, 8, 8, 8)
    by_hand = torch.einsum("bchw,kc->bkhw", feats, model.fc.weight).mean((2, 3)) + model.fc.bias
    torch.testing.assert_close(model(x), by_hand)
    assert isinstance(model, SmallCNN) and model.attnscope_spec["config"]["widths"] == [4, 8]


def test_unknown_model_and_bad_option():
    with pytest.raises(UnknownNameError, match="resnet18"):
        models.get("resnet81")
    with pytest.raises(InputError, match="smallcnn"):
        models.get("smallcnn", wdiths=[4])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_model_from_a_local_weights_file(tmp_path, suffix):
    source = models.get("resnet18", num_classes=3)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = models.get("resnet18", num_classes=3, weights=str(path)).eval()
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source.eval()(x))
    assert "weights" not in loaded.attnscope_spec["config"]


def test_torchvision_weights_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        models.get("resnet18", weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        models.get("resnet18", weights=str(bad))


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = models.get("smallcnn", widths=[4, 8], num_classes=5)
    path = checkpoint.save(model, tmp_path / "m.safetensors", {"epoch": 3})
    loaded, header = checkpoint.load(tmp_path / "m.json")  # the JSON copy points at its weights
    assert header["info"] == {"epoch": 3}
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert json.loads(path.with_suffix(".json").read_text())["model"]["name"] == "smallcnn"

    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "nope")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        checkpoint.load(corrupt)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an attnscope checkpoint"):
        checkpoint.load(foreign)
    # A header that names a model the weights do not fit.
    other = models.get("smallcnn", widths=[4, 16], num_classes=5)
    wrong = tmp_path / "wrong.safetensors"
    from attnscope import fileio

    fileio.save_tensors(wrong, model.state_dict(), {"format": checkpoint.FORMAT, "model": other.attnscope_spec})
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(wrong)
