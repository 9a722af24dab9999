"""Pointing game, energy and relevance mass / rank on tiny hand-made maps and boxes."""

import pytest
import torch

from attnscope.errors import InputError
from attnscope.metrics import (
    average_precision,
    box_masks,
    energy_in_box,
    focus,
    mean_iou,
    pixel_accuracy,
    pointing_game,
    relevance_mass,
    relevance_rank,
    roc_auc,
    top_k_intersection,
)


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
    with pytest.raises(InputError, match="empty"):
        relevance_rank(m, torch.zeros_like(mask))


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


def test_top_k_intersection_by_hand():
    m = torch.tensor([[[4.0, 3.0, 2.0], [1.0, 0.0, 5.0]]])
    mask = torch.tensor([[[True, False, False], [False, False, True]]])
    assert top_k_intersection(m, mask, k=1).item() == 1.0  # 5 is in the mask
    assert top_k_intersection(m, mask, k=2).item() == 1.0  # 5, 4
    assert top_k_intersection(m, mask, k=3).item() == pytest.approx(2 / 3)  # 5, 4, 3
    with pytest.raises(InputError, match="k must be"):
        top_k_intersection(m, mask, k=7)


def test_roc_auc_by_hand_with_ties():
    m = torch.tensor([[[3.0, 1.0, 2.0, 2.0]]])
    mask = torch.tensor([[[True, False, True, False]]])
    # pairs (inside, outside): (3,1) 1, (3,2) 1, (2,1) 1, (2,2) ½ → 3.5 / 4
    assert roc_auc(m, mask).item() == pytest.approx(3.5 / 4)
    assert roc_auc(-m, mask).item() == pytest.approx(0.5 / 4)
    with pytest.raises(InputError, match="every pixel"):
        roc_auc(m, torch.ones_like(mask))


def test_focus_on_a_mosaic_by_hand():
    m = torch.zeros(1, 4, 4)
    m[0, :2, :2] = 1.0  # top-left: 4
    m[0, 2:, 2:] = 3.0  # bottom-right: 12
    m[0, 0, 3] = -5.0  # negative mass is not counted
    both = torch.tensor([[True, False, False, True]])
    assert focus(m, both).item() == 1.0
    assert focus(m, torch.tensor([[True, False, False, False]])).item() == pytest.approx(4 / 16)
    assert focus(m, torch.tensor([[False, True, True, False]])).item() == 0.0
    with pytest.raises(InputError, match="quadrant"):
        focus(m, torch.zeros(1, 4, dtype=torch.bool))


def test_segmentation_scores_by_hand():
    m = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # normalised 0, 1/3, 2/3, 1; mean 1/2 → foreground {2, 3}
    mask = torch.tensor([[[False, True], [False, True]]])
    assert pixel_accuracy(m, mask).item() == pytest.approx(2 / 4)  # pixels 1 and 2 disagree
    # foreground: {2, 3} vs {1, 3}: 1/3; background {0, 1} vs {0, 2}: 1/3
    assert mean_iou(m, mask).item() == pytest.approx(1 / 3)
    # ranked 3 (hit), 2, 1 (hit), 0: precision 1 at recall ½, 2/3 at recall 1
    assert average_precision(m, mask).item() == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_segmentation_scores_agree_with_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    g = torch.Generator().manual_seed(0)
    m = (torch.rand(6, 12, 12, generator=g) * 5).round()  # many ties
    mask = torch.rand(6, 12, 12, generator=g) > 0.7
    ap, auc = average_precision(m, mask), roc_auc(m, mask)
    for i in range(6):
        y, s = mask[i].flatten().numpy(), m[i].flatten().numpy()
        assert ap[i].item() == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert auc[i].item() == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("metric", [pointing_game, energy_in_box, relevance_mass, relevance_rank, roc_auc,
                                    top_k_intersection, pixel_accuracy, mean_iou, average_precision])
def test_every_localisation_metric_refuses_bad_maps_and_truth(metric):
    m, mask = torch.rand(2, 4, 4), torch.rand(2, 4, 4) > 0.5
    mask[:, 0, 0], mask[:, 0, 1] = True, False
    kw = {"k": 2} if metric is top_k_intersection else {}
    truth = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]]) if metric is energy_in_box else mask
    metric(m, truth, **kw)  # fine
    for bad, words in ((m.clone().fill_(float("nan")), "NaN"), (m[:, None], "several targets"),
                       (m[:1], "match|must be")):
        with pytest.raises(InputError, match=words):
            metric(bad, truth, **kw)
    if metric is not energy_in_box:
        empty = mask.clone()
        empty[1] = False
        with pytest.raises(InputError, match="empty"):
            metric(m, empty, **kw)
