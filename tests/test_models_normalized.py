"""`models.Normalized`: the weights' input normalisation inside the model, transparent to names and weights files."""

from __future__ import annotations

import pytest
import torch

import attnscope as ats
from attnscope.errors import InputError
from attnscope.models import Normalized, checkpoint, normalized
from attnscope.models.normalized import STATS

MEAN, STD = STATS["imagenet"]


@pytest.fixture(scope="module")
def bare():
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[4, 8], num_classes=3).eval()


def _by_hand(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_forward_is_the_model_on_normalised_images(bare):
    x = torch.rand(2, 3, 16, 16)
    wrapped = normalized(bare, "imagenet")
    assert torch.equal(wrapped(x), bare(_by_hand(x)))
    assert normalized(bare, "none") is bare
    with pytest.raises(InputError, match="unknown normalisation"):
        normalized(bare, "imagenett")
    with pytest.raises(InputError, match="std > 0"):
        Normalized(bare, [0.0, 0.0, 0.0], [1.0, 0.0, 1.0])


def test_names_weights_and_attributes_are_the_models(bare):
    wrapped = normalized(bare, "imagenet")
    names = [n for n, _ in bare.named_modules()]
    assert [n for n, m in wrapped.named_modules() if m is not wrapped] == names  # no "model." prefix
    assert [n for n, _ in wrapped.named_parameters()] == [n for n, _ in bare.named_parameters()]
    assert list(wrapped.state_dict()) == list(bare.state_dict())
    assert wrapped.get_submodule("features.1") is bare.get_submodule("features.1")
    assert wrapped.attnscope_spec["name"] == "smallcnn" and wrapped.config is bare.config  # passed through
    assert wrapped.attnscope_spec["normalize"]["std"] == pytest.approx(list(STD))
    assert "normalize" not in bare.attnscope_spec  # the model itself is unchanged


def test_maps_are_of_the_image_with_the_models_layer_names(bare):
    x = torch.rand(2, 3, 16, 16)
    wrapped = normalized(bare, "imagenet")
    ours = ats.explain(wrapped, x, ("gradcam", "saliency"), layer="features.1")
    theirs = ats.explain(bare, _by_hand(x), ("gradcam", "saliency"), layer="features.1")
    assert ours["gradcam"].layer == "features.1"
    torch.testing.assert_close(ours["gradcam"].values, theirs["gradcam"].values)
    # saliency is of the image: max_c |∂y/∂x_c| = max_c |∂y/∂x̂_c| / std_c, not the normalised tensor's
    image = x.clone().requires_grad_(True)
    logits = bare(_by_hand(image))
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    torch.testing.assert_close(ours["saliency"].values, image.grad.abs().amax(1))
    assert not torch.allclose(ours["saliency"].values, theirs["saliency"].values)


def test_checkpoint_round_trip_gives_the_wrapper_back(bare, tmp_path):
    wrapped = normalized(bare, "imagenet")
    path = checkpoint.save(wrapped, tmp_path / "model")
    loaded, header = checkpoint.load(path)
    assert isinstance(loaded, Normalized) and header["model"]["normalize"]["mean"] == pytest.approx(list(MEAN))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), wrapped(x))
    plain = ats.models.get("smallcnn", widths=[4, 8], num_classes=3)
    plain.load_state_dict(wrapped.state_dict())  # the weights file of the wrapper is the bare model's
    assert torch.equal(plain.eval()(_by_hand(x)), wrapped(x))
