"""Sparseness (Gini), complexity (entropy of the fractional contribution), effective complexity, by hand."""

import math

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics import complexity, effective_complexity, sparseness


def test_sparseness_is_the_gini_index_by_hand():
    # sorted |M| = 0, 0, 0, 1: Σ (2i − n − 1) a_(i) = (8 − 5) · 1 = 3, n Σ a = 4
    assert sparseness(torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])).item() == pytest.approx(3 / 4)
    # |M| = 1, 2, 3, 4 (signs ignored): Σ (2i − 5) a = −3 − 2 + 3 + 12 = 10, n Σ a = 40
    assert sparseness(torch.tensor([[[-1.0, 2.0], [3.0, -4.0]]])).item() == pytest.approx(10 / 40)
    assert sparseness(torch.full((1, 3, 3), 7.0)).item() == pytest.approx(0.0, abs=1e-15)
    assert sparseness(torch.zeros(1, 3, 3)).item() == 0.0
    m = torch.rand(3, 5, 5)
    assert torch.allclose(sparseness(m), sparseness(10 * m))  # scale-free


def test_complexity_is_the_entropy_of_the_fractional_contribution():
    assert complexity(torch.tensor([[[1.0, -1.0], [0.0, 0.0]]])).item() == pytest.approx(math.log(2))
    p = torch.tensor([1.0, 2.0, 3.0, 4.0]) / 10
    assert complexity(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])).item() == pytest.approx(float(-(p * p.log()).sum()))
    assert complexity(torch.zeros(1, 2, 2)).item() == pytest.approx(math.log(4))
    assert complexity(torch.tensor([[[0.0, 5.0], [0.0, 0.0]]])).item() == 0.0


def test_effective_complexity_counts_pixels_above_eps_of_the_maximum():
    m = torch.tensor([[[1.0, 1e-6], [-0.5, 0.0]]])
    assert effective_complexity(m).item() == 2.0  # 1 and |−0.5|; 1e-6 / 1 < 1e-5
    assert effective_complexity(m, eps=1e-7).item() == 3.0
    assert effective_complexity(torch.zeros(1, 2, 2)).item() == 0.0
    with pytest.raises(InputError, match="eps"):
        effective_complexity(m, eps=-1)


@pytest.mark.parametrize("metric", [sparseness, complexity, effective_complexity])
def test_complexity_metrics_refuse_bad_maps(metric):
    for bad, words in ((torch.full((1, 2, 2), float("nan")), "NaN"), (torch.rand(1, 3, 2, 2), "several targets"),
                       (torch.rand(4, 4), "must be"), (torch.ones(1, 2, 2, dtype=torch.long), "floating")):
        with pytest.raises(InputError, match=words):
            metric(bad)
