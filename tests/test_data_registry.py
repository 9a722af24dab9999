"""Built-in data sets by name: one builder signature, a `kind`, and typed errors."""

import pytest
import torch

from attnscope import data
from attnscope.errors import InputError, UnknownNameError


def test_registered_data_sets_build_by_name_with_their_kind():
    assert data.names() == ["clutter", "clutter-decoy", "scenes", "permuted", "scenes-shuffled", "karpathy", "photos"]
    clutter = data.get("clutter", "test", 4, 7)
    assert isinstance(clutter, data.ClutteredDigits) and not clutter.decoy
    assert (clutter.kind, clutter.num_classes, len(clutter)) == ("classification", 10, 4)
    assert clutter.split == "test"
    assert torch.equal(clutter[3].image, data.ClutteredDigits("test", 4, seed=7)[3].image)
    decoy = data.get("clutter-decoy", "train", 3, 0, decoy_size=4)
    assert decoy.decoy and decoy.decoy_size == 4 and decoy.kind == "classification"
    scenes = data.get("scenes", "train", 5, 1, n_captions=3)
    assert scenes.kind == "captioning" and scenes.vocabulary() == data.DigitScenes.vocabulary()
    assert scenes[0].captions == data.DigitScenes("train", 5, seed=1, n_captions=3)[0].captions


def test_unknown_names_and_options_raise_typed_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'scenes'"):
        data.get("scene", "train", 2, 0)
    with pytest.raises(InputError, match="'clutter'.*colour"):
        data.get("clutter", "train", 2, 0, colour="red")
    with pytest.raises(InputError, match="'clutter-decoy'"):
        data.get("clutter-decoy", "train", 2, 0, decoy=False)


def test_scenes_shuffled_gives_each_training_image_another_scenes_captions():
    shuffled = data.get("scenes-shuffled", "train", 6, 0, caption_seed=1)
    plain = data.DigitScenes("train", 6, seed=0)
    assert shuffled.kind == "captioning" and shuffled.vocabulary() == plain.vocabulary()
    assert sorted(shuffled.perm) == list(range(6)) and shuffled.perm != list(range(6))
    for i in range(6):
        assert torch.equal(shuffled[i].image, plain[i].image)
        assert shuffled[i].captions == plain[shuffled.perm[i]].captions
    assert data.get("scenes-shuffled", "test", 3, 0)[1].captions == data.DigitScenes("test", 3, seed=0)[1].captions
