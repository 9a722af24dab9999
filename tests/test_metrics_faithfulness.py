"""Deletion / insertion AUC, Average Drop and Increase in Confidence with hand-computed scorers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnscope.errors import InputError
from attnscope.metrics.faithfulness import (
    aopc,
    average_drop,
    blur_substrate,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    mean_substrate,
    monotonicity,
    pixel_flipping,
    region_perturbation,
    rise_kernel,
)

IMAGE = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])  # (1, 1, 2, 2)
MAP = IMAGE[:, 0].clone()  # importance order 4, 3, 2, 1


def total(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def test_deletion_and_insertion_curves_by_hand():
    assert deletion_curve(MAP, IMAGE, total, "zero", step=1)[0].tolist() == [10, 6, 3, 1, 0]
    assert insertion_curve(MAP, IMAGE, total, "zero", step=1)[0].tolist() == [0, 4, 7, 9, 10]
    # trapezoid over 4 equal intervals: (Σ − first/2 − last/2) / 4
    assert deletion_auc(MAP, IMAGE, total, "zero", step=1).item() == pytest.approx((20 - 5) / 4)
    assert insertion_auc(MAP, IMAGE, total, "zero", step=1).item() == pytest.approx((30 - 5) / 4)


def test_pixels_per_step_and_a_short_last_step():
    assert deletion_curve(MAP, IMAGE, total, "zero", step=2)[0].tolist() == [10, 3, 0]
    assert deletion_curve(MAP, IMAGE, total, "zero", step=3)[0].tolist() == [10, 1, 0]  # 3 px, then the last 1
    assert deletion_auc(MAP, IMAGE, total, "zero", step=3).item() == pytest.approx((11 - 5) / 2)


def test_reversed_map_deletes_the_least_important_first():
    assert deletion_curve(-MAP, IMAGE, total, "zero", step=1)[0].tolist() == [10, 9, 7, 4, 0]


def test_scorer_sees_the_source_image_of_each_input():
    images = torch.cat([IMAGE, 2 * IMAGE, 3 * IMAGE])
    maps = images[:, 0]
    weights = torch.tensor([1.0, 10.0, 100.0])
    scorer = lambda x, i: x.flatten(1).sum(1) * weights[i]  # noqa: E731
    one_by_one = torch.cat([deletion_curve(maps[k : k + 1], images[k : k + 1],
                                           lambda x, i, k=k: x.flatten(1).sum(1) * weights[k], "zero", 1)
                            for k in range(3)])
    for batch in (1, 4, 7, 256):
        assert torch.equal(deletion_curve(maps, images, scorer, "zero", 1, batch_size=batch), one_by_one)
    assert one_by_one[2, 0] == 100 * 30


def rise_gkern(klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """An independent port of RISE's `gkern` (evaluation.py): scipy blurs a delta, reflect mode."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1
    return torch.from_numpy(gaussian_filter(delta, nsig).astype("float32"))


def test_rise_kernel_is_risees_gkern_exactly():
    assert torch.equal(rise_kernel(), rise_gkern())
    k = rise_kernel()
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)  # reflect mode keeps the delta's mass
    assert k.max() / k.min() < 1.2  # σ = 5 on 11 px, mirrored: almost flat, unlike a truncated Gaussian


def test_blur_substrate_is_rises_conv2d():
    x = torch.rand(2, 3, 20, 24)
    kern = torch.zeros(3, 3, 11, 11)
    for c in range(3):
        kern[c, c] = rise_gkern()
    assert torch.equal(blur_substrate(x), F.conv2d(x, kern, padding=5))  # RISE: zero padding, per channel


def test_pixel_flipping_is_the_deletion_curve_and_aopc_by_hand():
    flipped = pixel_flipping(MAP, IMAGE, total, "zero", step=1)
    assert flipped[0].tolist() == [10, 6, 3, 1, 0]
    assert aopc(flipped).item() == pytest.approx((0 + 4 + 7 + 9 + 10) / 5)


def test_region_perturbation_by_hand():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    m = torch.zeros(1, 4, 4)
    m[0, 2:, :2] = 5.0  # bottom-left 2×2 region first, then top-right
    m[0, :2, 2:] = 1.0
    # regions: TL = 0+1+4+5 = 10, TR = 2+3+6+7 = 18, BL = 8+9+12+13 = 42, BR = 10+11+14+15 = 50
    morf = region_perturbation(m, image, total, patch=2, substrate="zero")
    assert morf[0].tolist() == [120, 78, 60, 50, 0]  # BL, TR, then TL before BR (tie at 0: raster order)
    lerf = region_perturbation(m, image, total, patch=2, regions=2, order="lerf")
    assert lerf[0].tolist() == [120, 110, 60]  # TL, BR (0, 0 in raster order), stop after 2
    edge = region_perturbation(torch.ones(1, 3, 3), torch.ones(1, 1, 3, 3), total, patch=2)
    assert edge[0].tolist() == [9, 5, 3, 1, 0]  # 2×2, 2×1, 1×2 and 1×1 regions at the edges


def test_monotonicity_adds_least_relevant_first():
    # adding pixels 1, 2, 3, 4 (least relevant first) to zeros: sums 1, 3, 6, 10 rise
    assert monotonicity(MAP, IMAGE, total, "zero", step=1).item() == 1.0
    falling = lambda x, i: -x.flatten(1).sum(1)  # noqa: E731
    assert monotonicity(MAP, IMAGE, falling, "zero", step=1).item() == 0.0


def test_mean_substrate_is_per_image_and_channel():
    x = torch.stack([torch.full((2, 3, 3), 1.0), torch.full((2, 3, 3), 3.0)])
    x[0, 1] = 5.0
    s = mean_substrate(x)
    assert s[0, 0].unique().tolist() == [1.0] and s[0, 1].unique().tolist() == [5.0]
    assert s[1].unique().tolist() == [3.0]


def test_average_drop_and_increase_by_hand():
    image = torch.ones(1, 1, 2, 2)
    m = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # normalised: 0, 1/3, 2/3, 1 → masked sum 2
    # Y = 4, O = 2: drop (4 − 2) / 4
    assert average_drop(m, image, total).item() == pytest.approx(0.5)
    assert increase_in_confidence(m, image, total).item() == 0.0
    rising = lambda x, i: 10 - x.flatten(1).sum(1)  # noqa: E731  Y = 6, O = 8
    assert average_drop(m, image, rising).item() == 0.0
    assert increase_in_confidence(m, image, rising).item() == 1.0


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="maps must be"):
        deletion_auc(MAP[:, :1], IMAGE, total)
    with pytest.raises(InputError, match="several targets"):
        deletion_auc(MAP[:, None], IMAGE, total)
    with pytest.raises(InputError, match="NaN"):
        deletion_auc(MAP * float("nan"), IMAGE, total)
    with pytest.raises(InputError, match="order"):
        region_perturbation(MAP, IMAGE, total, patch=1, order="random")
    with pytest.raises(InputError, match="scores"):
        deletion_auc(MAP, IMAGE, lambda x, i: x.sum())
    with pytest.raises(InputError, match="positive"):
        average_drop(MAP, IMAGE, lambda x, i: -x.flatten(1).sum(1))
    with pytest.raises(InputError, match="pixels per step"):
        deletion_auc(MAP, IMAGE, total, step=0)
    with pytest.raises(KeyError, match="substrate"):
        insertion_auc(MAP, IMAGE, total, substrate="grey")
