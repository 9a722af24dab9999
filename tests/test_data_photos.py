"""The `photos` data set: real photos, hand-drawn boxes inside them, ImageNet ids that name the object."""

from __future__ import annotations

import pytest
import torch

from attnscope import data
from attnscope.data.photos import annotations, photo, scaled_box
from attnscope.errors import DataError


def test_every_box_lies_inside_its_photo_and_is_not_empty() -> None:
    objects = annotations()
    assert len(objects) >= 8 and len({o["photo"] for o in objects}) >= 7
    for o in objects:
        h, w, c = photo(o["photo"]).shape
        x0, y0, x1, y1 = o["box"]
        assert c == 3 and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, o


def test_class_names_are_those_of_the_imagenet_ids() -> None:
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for o in annotations():
        assert names[o["class"]] == o["class_name"]


def test_boxes_scale_outward_with_the_image() -> None:
    # a 400 × 600 photo to 224 × 224: x × 224/600, y × 224/400, rounded away from the box's inside
    assert scaled_box([170, 15, 412, 292], (400, 600), (224, 224)).tolist() == [63, 8, 154, 164]
    assert scaled_box([0, 0, 600, 400], (400, 600), (224, 224)).tolist() == [0, 0, 224, 224]


def test_samples_are_resized_images_with_their_boxes() -> None:
    photos = data.get("photos", "test", 100, size=(64, 96))
    assert len(photos) == len(annotations())
    for s in photos:
        assert s.image.shape == (3, 64, 96) and 0 <= s.image.min() and s.image.max() <= 1
        x0, y0, x1, y1 = s.box.tolist()
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64
    grey = next(s for s in photos if s.name.startswith("camera"))
    assert torch.equal(grey.image[0], grey.image[1])  # a greyscale photo as three equal channels
    assert len(data.get("photos", "test", 3)) == 3  # n caps the objects


def test_an_unknown_photo_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown photo 'moon'"):
        photo("moon")
