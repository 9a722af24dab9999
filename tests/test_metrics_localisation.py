"""Pointing game, energy and relevance mass / rank on tiny hand-made maps and boxes."""

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics import box_masks, energy_in_box, pointing_game, relevance_mass, relevance_rank


def _peak(h: int, w: int, y: int, x: int) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[0, y, x] = 1.0
    return m


def test_pointing_inside_and_outside_the_box():
    box = torch.tensor([[2, 2, 5, 4]])  # x in [2, 5), y in [2, 4)
    assert pointing_game(_peak(8, 8, 3, 4), box).item() == 1.0  # last column of the box
    assert pointing_game(_peak(8, 8, 3, 5), box).item() == 0.0  # one past it
    assert pointing_game(_peak(8, 8, 4, 2), box).item() == 0.0  # one row below


def test_pointing_tolerance_is_pixel_centre_distance():
    box = torch.tensor([[2, 2, 5, 4]])
    assert pointing_game(_peak(10, 10, 3, 6), box, tolerance=1).item() == 0.0  # 2 px right of x=4
    assert pointing_game(_peak(10, 10, 3, 6), box, tolerance=2).item() == 1.0
    # diagonal (5, 6) to the corner pixel (3, 4): √8 ≈ 2.83 px
    assert pointing_game(_peak(10, 10, 5, 6), box, tolerance=2.8).item() == 0.0
    assert pointing_game(_peak(10, 10, 5, 6), box, tolerance=2.9).item() == 1.0


def test_pointing_with_tolerance_matches_a_brute_force_disc():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(40, 12, 12, generator=g)
    masks = torch.rand(40, 12, 12, generator=g) > 0.9
    for tol in (0, 1, 1.5, 3):
        expected = []
        for m, gt in zip(maps, masks, strict=True):
            py, px = divmod(int(m.argmax()), 12)
            points = torch.nonzero(gt).tolist()
            expected.append(float(any((y - py) ** 2 + (x - px) ** 2 <= tol**2 for y, x in points)))
        assert pointing_game(maps, masks, tol).tolist() == expected


def test_first_maximum_in_raster_order_is_the_point():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 3] = m[0, 3, 0] = 1.0  # tie: (0, 3) comes first
    assert pointing_game(m, torch.tensor([[3, 0, 4, 1]])).item() == 1.0
    assert pointing_game(m, torch.tensor([[0, 3, 1, 4]])).item() == 0.0


def test_relevance_mass_counts_positive_relevance_only():
    m = torch.tensor([[[2.0, -5.0], [1.0, 1.0]]])
    mask = torch.tensor([[[True, True], [False, False]]])
    assert relevance_mass(m, mask).item() == pytest.approx(2 / 4)
    assert energy_in_box(m, torch.tensor([[0, 0, 2, 1]])).item() == pytest.approx(0.5)
    assert relevance_mass(-m.abs(), mask).item() == 0.0  # nothing positive


def test_relevance_rank_by_hand():
    m = torch.tensor([[[4.0, 3.0, 2.0], [1.0, 0.0, 5.0]]])
    mask = torch.tensor([[[True, False, True], [False, False, True]]])
    # K = 3: the top-3 pixels are 5, 4, 3 → two of them (5, 4) in the mask
    assert relevance_rank(m, mask).item() == pytest.approx(2 / 3)
    assert torch.isnan(relevance_rank(m, torch.zeros_like(mask))).all()


def test_box_and_mask_ground_truth_agree():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(6, 10, 12, generator=g)
    boxes = torch.tensor([[0, 0, 3, 3], [2, 1, 9, 8], [5, 5, 12, 10], [1, 1, 2, 2], [0, 0, 12, 10], [4, 2, 6, 9]])
    masks = box_masks(boxes, (10, 12))
    for fn in (pointing_game, relevance_mass, relevance_rank):
        assert torch.equal(fn(maps, boxes), fn(maps, masks))


def test_bad_ground_truth_raises():
    with pytest.raises(InputError, match="boxes"):
        pointing_game(torch.rand(2, 4, 4), torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(InputError, match="bool masks"):
        relevance_mass(torch.rand(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(InputError, match="tolerance"):
        pointing_game(torch.rand(1, 4, 4), torch.tensor([[0, 0, 1, 1]]), tolerance=-1)
    with pytest.raises(InputError, match="NaN"):
        relevance_rank(torch.full((1, 4, 4), float("nan")), torch.ones(1, 4, 4, dtype=torch.bool))


def test_a_constant_map_points_nowhere():
    from attnscope.metrics import pointing_game

    maps = torch.zeros(2, 4, 4)
    maps[1, 2, 2] = 1.0
    box = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]])
    assert pointing_game(maps, box).tolist() == [0.0, 1.0]


def test_result_files_get_the_permissions_of_any_new_file(tmp_path):
    import os

    from attnscope import fileio

    fileio.write_text(tmp_path / "r.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o666 & ~mask
