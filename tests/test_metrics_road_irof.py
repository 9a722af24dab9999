"""ROAD's noisy linear imputation, ROAD curves, IROF, faithfulness correlation and infidelity by hand."""

import math

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics import faithfulness_correlation, infidelity, irof, irof_curve, road_auc, road_curve
from attnscope.metrics.road import impute

IMAGE = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])  # (1, 1, 2, 2)
MAP = IMAGE[:, 0].clone()


def total(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def test_imputing_one_pixel_is_the_weighted_mean_of_its_neighbours():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    # direct neighbours 1, 3, 5, 7 weigh 1/6, diagonal 0, 2, 6, 8 weigh 1/12
    want = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    out = impute(x, removed)
    assert out[0, 0, 1, 1].item() == pytest.approx(want, abs=1e-9)
    assert torch.equal(out[~removed[:, None].expand_as(out)], x[~removed[:, None].expand_as(x)])


def test_imputing_two_coupled_pixels_solves_their_system():
    # the corner of a 2×2 image: neighbours 3, 2 (1/6) and 1 (1/12), S = 5/12
    corner = torch.zeros(1, 2, 2, dtype=torch.bool)
    corner[0, 0, 0] = True
    assert impute(IMAGE, corner)[0, 0, 0, 0].item() == pytest.approx((3 / 6 + 2 / 6 + 1 / 12) / (5 / 12))
    # a 1×3 image [6, p1, p2]: S_1 = 1/6 + 1/6, S_2 = 1/6 (no diagonals inside a single row)
    row = torch.tensor([[[[6.0, 0.0, 0.0]]]])
    removed = torch.tensor([[[False, True, True]]])
    # p1: (1/3) p1 − (1/6) p2 = (1/6)·6 ; p2: (1/6) p2 − (1/6) p1 = 0  →  p1 = p2 = 6
    assert impute(row, removed)[0, 0, 0].tolist() == pytest.approx([6.0, 6.0, 6.0])


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    x = torch.rand(2, 3, 8, 8)
    removed = torch.rand(2, 8, 8) > 0.5
    a = impute(x, removed, 0.01, torch.Generator().manual_seed(3))
    b = impute(x, removed, 0.01, torch.Generator().manual_seed(3))
    clean = impute(x, removed)
    assert torch.equal(a, b) and not torch.equal(a, clean)
    assert (a - clean).abs().max() < 0.06
    assert torch.equal(a[~removed[:, None].expand_as(a)], x[~removed[:, None].expand_as(x)])


def test_road_curves_by_hand():
    # 25 %: the most relevant pixel (4, top-left) is imputed from 3, 2 and 1: (6 + 4 + 1) / 5 = 2.2
    morf = road_curve(MAP, IMAGE, total, percentages=(0, 25), noise=0.0)
    assert morf[0].tolist() == pytest.approx([10.0, 2.2 + 3 + 2 + 1])
    # LeRF removes the 1 (bottom-right) first: (2·2 + 2·3 + 4) / 5 = 2.8
    lerf = road_curve(MAP, IMAGE, total, percentages=(25,), order="lerf", noise=0.0)
    assert lerf[0].tolist() == pytest.approx([4 + 3 + 2 + 2.8])
    assert road_auc(torch.tensor([[1.0, 0.0, 0.0]]), (10, 20, 30)).item() == pytest.approx(0.25)
    with pytest.raises(InputError, match="percentages"):
        road_curve(MAP, IMAGE, total, percentages=(150,))


def test_irof_by_hand():
    image = torch.tensor([[[[1.0, 1.0], [2.0, 4.0]]]])
    segments = torch.tensor([[[0, 0], [1, 2]]])
    maps = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]])  # segment means: 0, 1, 3 → remove 2, 1, then 0
    rel, counts = irof_curve(maps, image, total, segments, substrate="zero")
    assert counts.tolist() == [3]
    assert rel[0].tolist() == pytest.approx([1.0, 4 / 8, 2 / 8, 0.0])
    # area over the curve on [0, 1] with 3 steps: 1 − (1/2 + 1/2 + 1/4 + 0/2) / 3
    assert irof(maps, image, total, segments, substrate="zero").item() == pytest.approx(1 - (0.5 + 0.5 + 0.25) / 3)


def test_faithfulness_correlation_of_a_linear_model():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 6, 6, generator=g) + 0.1
    subsets = torch.rand(3, 20, 36, generator=g).argsort(2)[..., :5]
    # f = Σ x and a zero substrate: f(x) − f(x_S) = Σ_S x exactly, so M = x correlates perfectly
    assert faithfulness_correlation(x[:, 0], x, total, subsets=subsets).tolist() == pytest.approx([1, 1, 1])
    assert faithfulness_correlation(-x[:, 0], x, total, subsets=subsets).tolist() == pytest.approx([-1, -1, -1])
    flat = faithfulness_correlation(torch.ones(3, 6, 6), x, total, subsets=subsets)
    assert all(math.isnan(v) for v in flat.tolist())  # Σ_S M is constant over the runs


def test_infidelity_of_a_linear_model():
    w = torch.rand(1, 1, 4, 4)
    f = lambda x, i: (x * w).flatten(1).sum(1)  # noqa: E731
    x = torch.rand(2, 1, 4, 4)
    exact = w[:, 0].expand(2, 4, 4)  # Σ I ⊙ w = f(x) − f(x − I) for every I
    assert infidelity(exact, x, f, n=7).tolist() == pytest.approx([0, 0], abs=1e-12)
    twice = infidelity(2 * exact, x, f, n=7, seed=1)
    assert (twice > 0).all()
    assert infidelity(2 * exact, x, f, n=7, seed=1, normalize=True).tolist() == pytest.approx([0, 0], abs=1e-12)
    square = infidelity(exact, x, f, perturbation="square")
    assert square.tolist() == pytest.approx([0, 0], abs=1e-12)
    with pytest.raises(InputError, match="perturbations must be"):
        infidelity(exact, x, f, perturbations=torch.zeros(2, 3, 1, 4))
