"""Deletion / insertion AUC, Average Drop and Increase in Confidence with hand-computed scorers."""

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics.faithfulness import (
    average_drop,
    blur_substrate,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
)

IMAGE = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])  # (1, 1, 2, 2)
MAP = IMAGE[:, 0].clone()  # importance order 4, 3, 2, 1


def total(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def test_deletion_and_insertion_curves_by_hand():
    assert deletion_curve(total, IMAGE, MAP, "zero", step=1)[0].tolist() == [10, 6, 3, 1, 0]
    assert insertion_curve(total, IMAGE, MAP, "zero", step=1)[0].tolist() == [0, 4, 7, 9, 10]
    # trapezoid over 4 equal intervals: (Σ − first/2 − last/2) / 4
    assert deletion_auc(total, IMAGE, MAP, "zero", step=1).item() == pytest.approx((20 - 5) / 4)
    assert insertion_auc(total, IMAGE, MAP, "zero", step=1).item() == pytest.approx((30 - 5) / 4)


def test_pixels_per_step_and_a_short_last_step():
    assert deletion_curve(total, IMAGE, MAP, "zero", step=2)[0].tolist() == [10, 3, 0]
    assert deletion_curve(total, IMAGE, MAP, "zero", step=3)[0].tolist() == [10, 1, 0]  # 3 px, then the last 1
    assert deletion_auc(total, IMAGE, MAP, "zero", step=3).item() == pytest.approx((11 - 5) / 2)


def test_reversed_map_deletes_the_least_important_first():
    assert deletion_curve(total, IMAGE, -MAP, "zero", step=1)[0].tolist() == [10, 9, 7, 4, 0]


def test_scorer_sees_the_source_image_of_each_input():
    images = torch.cat([IMAGE, 2 * IMAGE, 3 * IMAGE])
    maps = images[:, 0]
    weights = torch.tensor([1.0, 10.0, 100.0])
    scorer = lambda x, i: x.flatten(1).sum(1) * weights[i]  # noqa: E731
    one_by_one = torch.cat([deletion_curve(lambda x, i, k=k: x.flatten(1).sum(1) * weights[k], images[k : k + 1],
                                           maps[k : k + 1], "zero", 1) for k in range(3)])
    for batch in (1, 4, 7, 256):
        assert torch.equal(deletion_curve(scorer, images, maps, "zero", 1, batch_size=batch), one_by_one)
    assert one_by_one[2, 0] == 100 * 30


def test_blur_substrate_is_a_normalised_gaussian():
    x = torch.zeros(1, 2, 31, 31)
    x[:, :, 15, 15] = 1.0
    b = blur_substrate(x)
    assert b.sum().item() == pytest.approx(2.0, abs=1e-6)  # kernel fits inside: no mass lost
    r = torch.arange(11.0) - 5
    g = torch.exp(-(r**2) / 50)
    g = g / g.sum()
    assert torch.allclose(b[0, 0, 10:21, 10:21], g[:, None] * g[None, :], atol=1e-7)
    assert torch.equal(b[0, 0], b[0, 1])


def test_average_drop_and_increase_by_hand():
    image = torch.ones(1, 1, 2, 2)
    m = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # normalised: 0, 1/3, 2/3, 1 → masked sum 2
    # Y = 4, O = 2: drop (4 − 2) / 4
    assert average_drop(total, image, m).item() == pytest.approx(0.5)
    assert increase_in_confidence(total, image, m).item() == 0.0
    rising = lambda x, i: 10 - x.flatten(1).sum(1)  # noqa: E731  Y = 6, O = 8
    assert average_drop(rising, image, m).item() == 0.0
    assert increase_in_confidence(rising, image, m).item() == 1.0


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="maps must be"):
        deletion_auc(total, IMAGE, MAP[:, :1])
    with pytest.raises(InputError, match="scores"):
        deletion_auc(lambda x, i: x.sum(), IMAGE, MAP)
    with pytest.raises(InputError, match="positive"):
        average_drop(lambda x, i: -x.flatten(1).sum(1), IMAGE, MAP)
    with pytest.raises(InputError, match="pixels per step"):
        deletion_auc(total, IMAGE, MAP, step=0)
    with pytest.raises(KeyError, match="substrate"):
        insertion_auc(total, IMAGE, MAP, substrate="grey")
