"""Default similarity metrics work on every built-in image size: HOG (48 px) and SSIM (11 px) are left out of
the defaults with a note below their size, and refused up front when asked for."""

from __future__ import annotations

import pytest
import torch

import attnscope as ats
from attnscope.errors import InputError
from attnscope.metrics.similarity import too_small
from attnscope.sanity.randomization import METRICS


def test_too_small_names_the_size_each_similarity_needs():
    assert too_small("hog_pearson", (47, 64)) == "hog_pearson needs maps of at least 48×48 px, got 47×64"
    assert too_small("hog_spearman", (48, 48)) is None and too_small("ssim", (10, 40)).startswith("ssim needs")
    assert too_small("spearman_abs", (1, 1)) is None


def test_defaults_on_32_px_images_leave_hog_out_with_a_note_and_asking_for_it_fails_before_any_work():
    model = ats.models.get("smallcnn", widths=[4, 8]).eval()
    images = torch.rand(2, 3, 32, 32)
    one_block, none_kept = ats.sanity.Randomisation(blocks=1), ats.sanity.Comparison(keep=0)
    result = ats.sanity.model_randomization(model, images, "saliency", randomisation=one_block, comparison=none_kept)
    assert result.meta["metrics"] == ["spearman_abs", "spearman_signed", "ssim"]
    assert result.meta["notes"] == [f"{m} needs maps of at least 48×48 px, got 32×32: left out"
                                    for m in ("hog_pearson", "hog_spearman")]
    assert {r["metric"] for r in result.rows()} == {"spearman_abs", "spearman_signed", "ssim"}
    with pytest.raises(InputError, match="hog_pearson needs maps of at least 48×48 px"):
        ats.sanity.model_randomization(model, images, "saliency", comparison=ats.sanity.Comparison(("hog_pearson",)))
    big = ats.sanity.model_randomization(model, torch.rand(1, 3, 48, 48), "saliency", randomisation=one_block,
                                         comparison=none_kept)
    assert big.meta["metrics"] == list(METRICS) and big.meta["notes"] == []
