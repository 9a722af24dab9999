"""Targets for detection, segmentation and embeddings: values by hand, and maps equal to autograd on real heads."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import InputError
from attnscope.explain import BoxScore, RegionScore, Similarity
from attnscope.explain.tasks import box_iou


def test_box_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20.0, 20, 30, 30], [0.0, 0, 10, 10]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[25 / 175, 0.0, 1.0]]))


DETECTIONS = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [6, 6, 15, 15]]),
               "scores": torch.tensor([0.9, 0.6, 0.3]), "labels": torch.tensor([1, 1, 2])}]


@pytest.mark.parametrize("box, label, expected", [
    ([6, 6, 15, 15], 1, 0.6),  # IoU 81/100 with the second detection, 16/109 with the first: the second
    ([0, 0, 10, 10], 1, 0.9),
    ([6, 6, 15, 15], 2, 0.3),  # the class decides among overlapping detections
    ([6, 6, 15, 15], 3, 0.0),  # no detection of class 3
    ([40, 40, 50, 50], 1, 0.0),  # none overlaps at IoU >= 0.5
])
def test_box_score_is_the_best_matching_detection_of_the_class(box, label, expected) -> None:
    assert BoxScore(torch.tensor(box), label)(DETECTIONS).tolist() == pytest.approx([expected])


def test_box_score_with_k_boxes_per_image_gives_k_scores() -> None:
    target = BoxScore(torch.tensor([[[0, 0, 10, 10], [6, 6, 15, 15]]]), torch.tensor([[1, 2]]))
    assert target(DETECTIONS).tolist() == [pytest.approx([0.9, 0.3])]


def test_region_and_similarity_by_hand() -> None:
    out = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)  # (B, classes, H, W)
    mask = torch.tensor([[True, False], [False, True]])
    assert RegionScore(1, mask)(out).tolist() == [4 + 7, 12 + 15]
    assert RegionScore(torch.tensor([0, 1]))(out).tolist() == [0 + 1 + 2 + 3, 12 + 13 + 14 + 15]
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert Similarity(torch.tensor([1.0, 1.0]))(e).tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5])
    both = Similarity(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))(e)
    assert both.tolist() == [pytest.approx([1.0, 0.0]), pytest.approx([0.0, -1.0])]


@pytest.mark.parametrize("target, output, needle", [
    (BoxScore(torch.tensor([0.0, 0.0, 1.0, 1.0]), 1), torch.zeros(1, 5), "needs a detector's output"),
    (BoxScore(torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3), torch.ones(3, dtype=torch.long)), DETECTIONS,
     "3 entries for 1 model outputs"),
    (RegionScore(1), torch.zeros(2, 5), "needs per-pixel logits"),
    (RegionScore(7), torch.zeros(1, 3, 2, 2), "out of range for 3 classes"),
    (RegionScore(1, torch.ones(3, 3, dtype=torch.bool)), torch.zeros(1, 3, 2, 2), "does not match"),
    (Similarity(torch.ones(3)), torch.zeros(2, 4), "3 dimensions, the embeddings 4"),
])
def test_a_target_that_does_not_fit_the_output_is_one_line(target, output, needle) -> None:
    with pytest.raises(InputError, match=needle):
        target(output)


def _manual_saliency(model: nn.Module, x: torch.Tensor, score) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score(model(x)).sum(), x)
    return g.abs().amax(1)


class Backbone(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 32, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=2, padding=1))
        self.out_channels = 32  # FCOS's head normalises with GroupNorm(32)


@pytest.fixture(scope="module")
def detectors():
    from torchvision.models.detection import FCOS, FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    torch.manual_seed(0)
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((1.0,),))
    common = dict(min_size=64, max_size=64, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    faster = FasterRCNN(Backbone(), num_classes=3, rpn_anchor_generator=anchors, box_score_thresh=0.0, **common)
    fcos = FCOS(Backbone(), num_classes=3, anchor_generator=AnchorGenerator(((16,),), ((1.0,),)),
                score_thresh=0.0, **common)
    return {"faster-rcnn": faster.eval(), "fcos": fcos.eval()}


@pytest.mark.parametrize("name", ["faster-rcnn", "fcos"])
def test_a_detection_map_is_the_gradient_of_the_matched_detection_score(detectors, name) -> None:
    model = detectors[name]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = model(x)[0]
    area = (first["boxes"][:, 2:] - first["boxes"][:, :2]).prod(1)
    top = int((area > 0).nonzero()[0])  # the best detection of image 0 with an area (random heads give flat ones too)
    target = BoxScore(first["boxes"][top], int(first["labels"][top]))  # explained in both images
    got = ats.explain(model, x, "saliency", targets=target)["saliency"].values
    torch.testing.assert_close(got, _manual_saliency(model, x, target))
    assert got[0].abs().sum() > 0


def test_a_segmentation_map_is_the_gradient_of_the_region_logit() -> None:
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    torch.manual_seed(0)
    body = IntermediateLayerGetter(nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 8, 3, stride=2, padding=1),
                                                             act=nn.ReLU())), {"act": "out"})
    model = FCN(body, FCNHead(8, 3)).eval()  # returns {"out": (B, 3, H, W)}; explain picks "out"
    x = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:16, 4:20] = True
    target = RegionScore(2, mask)
    got = ats.explain(model, x, "saliency", targets=target)["saliency"].values
    torch.testing.assert_close(got, _manual_saliency(model, x, lambda out: target(out["out"])))


def test_k_reference_embeddings_give_k_maps_equal_to_one_at_a_time() -> None:
    torch.manual_seed(0)
    tower = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 4)).eval()
    x = torch.rand(2, 3, 16, 16)
    refs = torch.randn(3, 4)
    both = ats.explain(tower, x, "gradcam", targets=Similarity(refs), layer="1")["gradcam"]
    assert both.values.shape == (2, 3, 16, 16)
    for k in range(3):
        one = ats.explain(tower, x, "gradcam", targets=Similarity(refs[k]), layer="1")["gradcam"]
        torch.testing.assert_close(both.values[:, k], one.values)
