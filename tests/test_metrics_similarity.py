"""Map similarities of the sanity checks: hand values, and agreement with scipy / scikit-image."""

import numpy as np
import pytest
import scipy.stats as ss
import torch
from skimage.feature import hog
from skimage.metrics import structural_similarity

from attnscope.errors import InputError
from attnscope.maps import AttentionMap, normalize
from attnscope.metrics.similarity import (
    SIMILARITIES,
    compare,
    mean_ci,
    prepare,
    rank,
    similarities,
    spearman,
    spearman_abs,
    spearman_signed,
    ssim,
)


def test_rank_averages_ties_like_scipy():
    x = torch.tensor([[3.0, 1, 1, 2, 5, 5, 5], [0, 0, 0, 0, 1, 1, 2]])
    assert rank(x).tolist() == [[4, 1.5, 1.5, 3, 6, 6, 6], [2.5, 2.5, 2.5, 2.5, 5.5, 5.5, 7]]
    many = torch.randint(0, 7, (5, 300)).float()
    expected = np.stack([ss.rankdata(r) for r in many.numpy()])
    assert np.array_equal(rank(many).numpy(), expected)


def test_spearman_by_hand():
    trained = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    # ranks (2, 3, 1, 4) against (1, 2, 3, 4): Σd² = 6, ρ = 1 − 6·6 / (4·15) = 0.4
    signed = torch.tensor([[[-2.0, 1.0, -4.0, 3.0]]])
    assert spearman_signed(trained, signed).item() == pytest.approx(0.4, abs=1e-12)
    # |signed| = (2, 1, 4, 3): Σd² = 4, ρ = 0.6
    assert spearman_abs(trained, signed).item() == pytest.approx(0.6, abs=1e-12)
    assert spearman_abs(trained, trained.flip(-1)).item() == pytest.approx(-1.0, abs=1e-12)


def test_spearman_matches_scipy_with_ties_and_signs():
    a = torch.randn(4, 16, 16).round(decimals=1)
    b = (a + torch.randn(4, 16, 16)).round(decimals=1)
    for ours, transform in ((spearman_signed, lambda t: t), (spearman_abs, np.abs)):
        pairs = zip(a.numpy(), b.numpy(), strict=True)
        expected = [ss.spearmanr(transform(p.ravel()), transform(q.ravel()))[0] for p, q in pairs]
        assert np.allclose(ours(a, b).numpy(), expected, atol=1e-12)


def test_ssim_matches_scikit_image_on_normalised_maps():
    a, b = torch.randn(3, 40, 48), torch.randn(3, 40, 48)
    b = a + 0.5 * b
    expected = [structural_similarity(p, q, gaussian_weights=True, data_range=2.0)
                for p, q in zip(normalize(a).double().numpy(), normalize(b).double().numpy(), strict=True)]
    assert np.allclose(ssim(a, b).numpy(), expected, atol=1e-10)
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))


def test_hog_similarities_match_scipy_on_scikit_image_features():
    a, b = torch.rand(2, 64, 64), torch.rand(2, 64, 64)
    fa = [hog(m, pixels_per_cell=(16, 16)) for m in normalize(a).double().numpy()]
    fb = [hog(m, pixels_per_cell=(16, 16)) for m in normalize(b).double().numpy()]
    got = similarities(a, b, ["hog_pearson", "hog_spearman"])
    pairs = list(zip(fa, fb, strict=True))
    assert np.allclose(got["hog_pearson"].numpy(), [ss.pearsonr(p, q)[0] for p, q in pairs], atol=1e-10)
    assert np.allclose(got["hog_spearman"].numpy(), [ss.spearmanr(p, q)[0] for p, q in pairs], atol=1e-10)


def test_prepared_reference_gives_the_same_numbers():
    a, b = torch.randn(3, 48, 48), torch.randn(3, 48, 48)
    names = SIMILARITIES.names()
    direct = similarities(a, b, names)
    staged = compare(prepare(a, names), prepare(b, names))
    for name in names:
        assert torch.equal(direct[name], staged[name])


def test_constant_map_is_undefined_not_zero():
    a, flat = torch.randn(2, 48, 48), torch.zeros(2, 48, 48)
    values = similarities(a, flat, ["spearman_abs", "spearman_signed", "hog_pearson"])
    for v in values.values():
        assert torch.isnan(v).all()


def test_mean_ci_by_hand_and_ignores_nan():
    mean, low, high, n = mean_ci(torch.tensor([1.0, 2.0, 3.0, float("nan")]))
    half = 4.302652729911275 / 3**0.5  # t(0.975, df=2) · s / √n with s = 1
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert mean_ci(torch.tensor([float("nan")]))[3] == 0
    one = mean_ci(torch.tensor([0.5]))
    assert one[0] == 0.5 and np.isnan(one[1])


def test_bad_maps_raise():
    with pytest.raises(InputError, match="same shape"):
        spearman_abs(torch.rand(2, 8, 8), torch.rand(2, 8, 9))
    with pytest.raises(InputError, match="same shape"):
        spearman(torch.rand(8), torch.rand(9))
    with pytest.raises(InputError, match="NaN"):
        spearman_abs(torch.full((1, 8, 8), float("nan")), torch.rand(1, 8, 8))
    with pytest.raises(InputError, match="HOG"):
        similarities(torch.rand(1, 20, 20), torch.rand(1, 20, 20), ["hog_pearson"])


def test_maps_of_any_leading_shape_give_one_value_per_map():
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)  # (B, K, H, W)
    for fn in (spearman, spearman_abs, ssim):
        batched = fn(a, b)
        assert batched.shape == (2, 3)
        one = torch.stack([torch.stack([fn(a[i, k], b[i, k]) for k in range(3)]) for i in range(2)])
        assert one.shape == (2, 3) and fn(a[0, 0], b[0, 0]).shape == ()  # a single map (H, W): one value
        torch.testing.assert_close(batched, one)
    amap = AttentionMap(a[:, 0], "gradcam", torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(spearman(amap, b[:, 0]), spearman(a[:, 0], b[:, 0]))  # AttentionMaps as they are
    x = torch.tensor([1.0, 2.0, 3.0, 5.0])
    assert spearman(x, -x).item() == pytest.approx(-1.0)  # two vectors: one value
