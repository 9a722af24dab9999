"""Sensitivity, local Lipschitz estimate and relative input/output stability on hand-made tensors."""

import math

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics import (
    avg_sensitivity,
    local_lipschitz,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
)

MAP = torch.tensor([[[3.0, 4.0]]])  # (1, 1, 2), ‖Φ‖ = 5
MOVED = torch.tensor([[[[3.0, 4.0]], [[0.0, 4.0]], [[3.0, 0.0]]]])  # (1, 3, 1, 2): changes 0, 3, 4


def test_sensitivity_by_hand():
    assert max_sensitivity(MAP, MOVED).item() == pytest.approx(4 / 5)
    assert avg_sensitivity(MAP, MOVED).item() == pytest.approx((0 + 3 + 4) / 3 / 5)
    kept = torch.tensor([[True, True, False]])
    assert max_sensitivity(MAP, MOVED, kept).item() == pytest.approx(3 / 5)  # the third one does not count
    assert math.isnan(max_sensitivity(MAP, MOVED, torch.zeros(1, 3, dtype=torch.bool)).item())
    zero = torch.zeros(1, 1, 2)
    assert max_sensitivity(zero, MOVED).item() == pytest.approx(5.0)  # ‖Φ(x)‖ = 0 divides by 1, as captum


def test_local_lipschitz_by_hand():
    x = torch.zeros(1, 1, 1, 2)
    xs = torch.tensor([[[[[1.0, 0.0]]], [[[0.0, 2.0]]], [[[3.0, 4.0]]]]])  # ‖x − x_j‖ = 1, 2, 5
    assert local_lipschitz(MAP, MOVED, x, xs).item() == pytest.approx(max(0 / 1, 3 / 2, 4 / 5), rel=1e-9)


def test_relative_stability_by_hand():
    x = torch.tensor([[[[2.0, 0.0]]]])
    xs = torch.tensor([[[[[1.0, 0.0]]], [[[2.0, 1e-6]]], [[[4.0, 0.0]]]]])
    # map ratios: ‖(Φ − Φ_j)/Φ‖ = 0, ‖(1, 0)‖ = 1, ‖(0, 1)‖ = 1
    # input ratios: ‖(x − x_j)/x‖, zeros of x as 1e-6: ‖(0.5, 0)‖, ‖(0, −1)‖, ‖(−1, 0)‖
    assert relative_input_stability(MAP, MOVED, x, xs).item() == pytest.approx(max(0 / 0.5, 1 / 1, 1 / 1))
    h = torch.tensor([[1.0, 0.0]])
    hs = torch.tensor([[[1.0, 0.0], [1.0, 2.0], [4.0, 4.0]]])  # ‖h − h_j‖ = 0 (→ 1e-6), 2, 5
    assert relative_output_stability(MAP, MOVED, h, hs).item() == pytest.approx(max(0 / 1e-6, 1 / 2, 1 / 5))


def test_shapes_are_checked():
    with pytest.raises(InputError, match="perturbed maps"):
        max_sensitivity(MAP, MOVED[0])
    with pytest.raises(InputError, match="NaN"):
        max_sensitivity(MAP, MOVED * float("nan"))
    with pytest.raises(InputError, match="valid"):
        max_sensitivity(MAP, MOVED, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="perturbed images"):
        local_lipschitz(MAP, MOVED, torch.zeros(1, 1, 1, 2), torch.zeros(1, 2, 1, 1, 2))
