"""Attention-guidance losses (`attnscope.guide`): hand-computed values, exact gradients, agreement with explain's maps,
the forms of `allowed`, and `attnscope train --guide` running the same functions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnscope import models
from attnscope.data import ClutterSample
from attnscope.errors import InputError, NotApplicableError, UnknownNameError
from attnscope.explain import explain
from attnscope.guide import GUIDES, cam, outside, own_attention, rrr
from attnscope.metrics import box_masks
from attnscope.train import fit
from attnscope.train.guidance import REGIONS, Guidance
from attnscope.train.tasks import Classification
from tiny_runs import tiny_config


class _Linear(nn.Module):
    """logits = W · flatten(x) + b, with W and b plain tensors (so gradcheck can vary them)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight_, self.bias_ = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight_.T + self.bias_


_linear = _Linear


def test_rrr_penalty_by_hand():
    # Two classes: ∂/∂x Σ_k log p_k = (p1 - p0)(W0 - W1). With z = (ln 3, 0): p = (3/4, 1/4), so the
    # input gradient is -1/2 · W0 = -1/2 · (1, 2, 3, 4) and pixels 1 and 2 lie outside: (1 + 9/4) = 13/4.
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    x = torch.tensor([[math.log(3), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    allowed = torch.tensor([[[True, False], [False, True]]] * 2)
    penalty, logits = rrr(_linear(weight, torch.zeros(2)), x, torch.tensor([0, 1]), allowed)
    assert torch.allclose(logits[0], torch.tensor([math.log(3), 0.0]))
    assert penalty.item() == pytest.approx((13 / 4 + 0.0) / 2)  # the second image has p0 = p1: no gradient


def test_rrr_gradient_reaches_the_parameters_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64)
    allowed = torch.rand(3, 2, 2, generator=g, dtype=torch.float64)  # a float mask: a weight per pixel
    bias = torch.randn(3, generator=g, dtype=torch.float64)

    def penalty(weight):
        return rrr(_linear(weight, bias), x, torch.zeros(3, dtype=torch.long), allowed).loss

    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(penalty, (weight,))  # double backprop against finite differences


def _cnn():
    torch.manual_seed(0)
    return models.get("smallcnn", num_classes=4, widths=[4, 8]).eval()


def _share_outside(maps: torch.Tensor, outside: torch.Tensor) -> float:
    pos = maps.clamp_min(0)
    return float(((pos * outside).flatten(1).sum(1) / pos.flatten(1).sum(1)).mean())


def test_cam_penalty_is_the_share_of_explains_gradcam_and_cam_outside_the_box():
    model, x, y = _cnn(), torch.rand(3, 3, 16, 16), torch.tensor([0, 2, 1])  # classes with positive maps
    boxes = torch.tensor([[2, 2, 10, 12], [0, 0, 16, 8], [5, 5, 9, 9]])
    outside = (~box_masks(boxes, (16, 16))).float()
    penalty, logits = cam(model, x, y, boxes)
    maps = explain(model, x, ("gradcam", "cam"), targets=y, options={"cam": {"relu": True}})
    assert (maps["gradcam"].values.flatten(1).sum(1) > 0).all()
    assert penalty.item() == pytest.approx(_share_outside(maps["gradcam"].values, outside), rel=1e-5)
    assert penalty.item() == pytest.approx(_share_outside(maps["cam"].values, outside), rel=1e-5)  # GAP + linear
    assert torch.allclose(logits, model(x))
    penalty.backward()
    assert all(p.grad is not None for p in model.features.parameters())


class Attending(nn.Module):
    """Softmax attention over positions of a 1x1 conv score; logits from the attended features."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.score, self.fc, self.form = nn.Conv2d(3, 1, 1), nn.Linear(3, 2), form

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, _, h, w = x.shape
        a = self.score(x).flatten(1).softmax(1).view(b, h, w)  # (B, H, W)
        logits = self.fc((a[:, None] * x).sum(dim=(2, 3)))
        forms = {"tensor": a, "list of (B, 1, H, W)": [a[:, None], a[:, None]], "dict (LTPA)": {"att2": a, "att3": a}}
        return (logits, forms[self.form]) if return_attention else logits


@pytest.mark.parametrize("form", ["tensor", "list of (B, 1, H, W)", "dict (LTPA)"])
def test_ltpa_penalty_is_the_share_of_the_models_own_attention_outside(form):
    torch.manual_seed(0)
    model, x = Attending(form), torch.rand(2, 3, 6, 6)
    allowed = torch.ones(2, 6, 6, dtype=torch.bool)
    allowed[:, :, 3:] = False
    penalty, logits = own_attention(model, x, torch.tensor([0, 1]), allowed)
    with torch.no_grad():
        a = model.score(x).flatten(1).softmax(1).view(2, 6, 6)
    assert penalty.item() == pytest.approx(float(a[:, :, 3:].sum(dim=(1, 2)).mean()), rel=1e-6)
    assert torch.allclose(logits, model(x))


def test_ltpa_penalty_on_the_ltpa_model_is_the_share_of_explains_ltpa_maps_outside():
    torch.manual_seed(0)
    model = models.get("ltpa", num_classes=4, widths=[4, 8, 8, 8], estimators=2, global_dim=8).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    boxes = torch.tensor([[4, 4, 20, 24], [10, 0, 32, 16]])
    outside = (~box_masks(boxes, (32, 32))).float()
    penalty, _ = Guidance("ltpa", None, "box").spec.fn(model, x, y, boxes)
    maps = explain(model, x, "ltpa")
    stages = [k for k in maps if k.startswith("ltpa/")]
    assert len(stages) == 2
    expected = sum(_share_outside(maps[k].values, outside) for k in stages) / 2
    assert penalty.item() == pytest.approx(expected, rel=1e-5)


def test_a_guide_that_does_not_apply_names_those_that_do():
    batch = ClutterSample(None, None, torch.tensor([[0, 0, 4, 4]]), None)
    with pytest.raises(NotApplicableError, match="ltpa.*return_attention.*Guides that do: rrr, cam"):
        Guidance("ltpa", None, "box")(_cnn(), torch.rand(1, 3, 8, 8), torch.tensor([0]), batch)
    with pytest.raises(NotApplicableError, match="Guides that do: rrr, cam"):
        own_attention(_cnn(), torch.rand(1, 3, 8, 8), None, batch.box)


def test_every_form_of_allowed_gives_the_same_outside_weight():
    x, y = torch.rand(2, 3, 4, 5), torch.tensor([1, 0])
    boxes = torch.tensor([[1, 0, 3, 2], [0, 1, 5, 4]])  # (x0, y0, x1, y1): 2x2 and 5x3 pixels allowed
    by_hand = torch.ones(2, 4, 5)
    by_hand[0, 0:2, 1:3] = 0
    by_hand[1, 1:4, 0:5] = 0
    mask = by_hand == 0
    for allowed in (boxes, mask, mask.double(), lambda x_, y_: boxes[1 - y_], lambda x_, y_: mask):
        a = outside(allowed, x, y)
        assert a.dtype.is_floating_point and torch.equal(a, by_hand)
    assert torch.equal(outside(boxes[0], x), by_hand[0].expand(2, 4, 5))  # one box for every image
    assert torch.equal(outside(mask[1], x), by_hand[1].expand(2, 4, 5))  # one mask for every image
    half = torch.full((4, 5), 0.25)
    assert torch.equal(outside(half, x), torch.full((2, 4, 5), 0.75))  # a weight in [0, 1]


@pytest.mark.parametrize("allowed, message", [
    (torch.tensor([[1.0, 0.0, 3.0, 2.0]] * 2), "integer tensor"),  # float boxes read as a (B, 4) mask
    (torch.tensor([[1, 0, 6, 2]] * 2), "leaves the 5x4 image"),
    (torch.tensor([[2, 0, 2, 2]] * 2), "empty"),
    (torch.tensor([[0, 0, 1, 1]] * 3), r"\(B, 4\) = \(2, 4\)"),
    (torch.ones(2, 5, 4, dtype=torch.bool), r"\(B, H, W\) = \(2, 4, 5\)"),
    (torch.full((2, 4, 5), 2.0), r"weight in \[0, 1\]"),
    ([[0, 0, 1, 1]], "got list"),
    (lambda x, y: None, "got NoneType"),
])
def test_allowed_that_does_not_fit_is_refused(allowed, message):
    with pytest.raises(InputError, match=message):
        rrr(_cnn(), torch.rand(2, 3, 4, 5), torch.tensor([0, 1]), allowed)


def test_regions_come_from_the_batch_and_data_without_them_is_refused():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2, 3] = True
    batch = ClutterSample(torch.rand(1, 3, 8, 8), torch.tensor([0]), torch.tensor([[1, 2, 5, 4]]), mask)
    box = REGIONS.get("box")(batch, (8, 8))
    assert box.sum() == 4 * 2 and box[0, 2:4, 1:5].all()
    assert torch.equal(REGIONS.get("mask")(batch, (8, 8)), mask)
    with pytest.raises(InputError, match="ground-truth 'box'"):
        Guidance("rrr", None, "box")(_cnn(), torch.rand(1, 3, 8, 8), torch.tensor([0]), (batch[0], batch[1]))
    assert Guidance("rrr", 3.0, "box").weight == 3.0
    assert Guidance("rrr", None, "mask").weight == GUIDES.get("rrr").weight


def test_guided_loss_is_cross_entropy_plus_weight_times_penalty(tmp_path):
    model, x, y = _cnn(), torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    box = torch.tensor([[2, 2, 10, 10]] * 4)
    batch = ClutterSample(x, y, box, box_masks(box, (16, 16)))
    cpu = torch.device("cpu")
    plain, _ = Classification(tiny_config(tmp_path)).loss(model, batch, cpu)
    loss, stats = Classification(tiny_config(tmp_path, guide="rrr", guide_weight=2.5)).loss(model, batch, cpu)
    penalty, _ = rrr(model, x, y, box)
    assert stats["guide"] / 4 == pytest.approx(penalty.item(), rel=1e-6) and penalty.item() > 0
    assert loss.item() == pytest.approx(plain.item() + 2.5 * penalty.item(), rel=1e-6)


def test_guided_training_records_the_penalty_and_bad_settings_fail(tmp_path):
    run = fit(tiny_config(tmp_path / "rrr", guide="rrr", epochs=1))
    assert run.history[-1]["train_guide"] > 0
    with pytest.raises(UnknownNameError, match="guide 'rr'"):
        fit(tiny_config(tmp_path / "bad", guide="rr"))
    with pytest.raises(InputError, match="guide_weight"):
        tiny_config(tmp_path / "bad", guide="rrr", guide_weight=-1.0)


def test_not_decoy_region_forbids_only_the_decoy_patch_and_needs_one():
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    box = torch.tensor([[0, 0, 8, 8]] * 2)
    decoys = torch.tensor([[0, 0, 2, 2], [5, 6, 8, 8]])  # (x0, y0, x1, y1): 4 and 6 pixels
    batch = ClutterSample(x, y, box, box_masks(box, (8, 8)), decoys)
    allowed = REGIONS.get("not-decoy")(batch, (8, 8))
    assert (~allowed).sum(dim=(1, 2)).tolist() == [4, 6]
    assert not allowed[0, :2, :2].any() and not allowed[1, 6:, 5:].any() and allowed[1, :6].all()
    # RRR on that region: the squared input gradients on the decoy pixels only, by hand
    model = _cnn()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.log_softmax(model(xg), dim=1).sum(), xg)
    by_hand = (g[0, :, :2, :2].square().sum() + g[1, :, 6:, 5:].square().sum()) / 2
    penalty, _ = Guidance("rrr", None, "not-decoy")(model, x, y, batch)
    assert penalty.item() == pytest.approx(by_hand.item(), rel=1e-5) and by_hand.item() > 0
    no_decoy = ClutterSample(x, y, box, box_masks(box, (8, 8)), torch.full((2, 4), -1))
    with pytest.raises(InputError, match="not-decoy.*decoy patch"):
        Guidance("rrr", None, "not-decoy")(model, x, y, no_decoy)
    with pytest.raises(UnknownNameError, match="not-decoy"):
        Guidance("rrr", None, "decoy")
