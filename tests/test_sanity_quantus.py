"""Our model parameter randomisation agrees with Quantus' MPRT where the definitions agree.

Same model, images, labels and re-initialisation (Quantus seeds every layer's reset_parameters()
with seed + 1), one-channel images so that our saliency (max |∂y/∂x| over channels) is captum's
(Σ |∂y/∂x|), Spearman of absolute maps. Quantus also reports the unrandomised model ("original",
self-similarity 1); that is not a randomisation step and we do not report it.
"""

import warnings

import numpy as np
import pytest
import torch

from attnscope import models
from attnscope.sanity import model_randomization


@pytest.mark.parametrize("mode, order", [("cascading", "top_down"), ("independent", "independent")])
def test_matches_quantus_mprt(mode, order):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus

        model = models.get("smallcnn", in_channels=1, widths=[4, 8]).eval()
        x, y = torch.rand(3, 1, 32, 32), torch.tensor([0, 1, 2])
        theirs = quantus.MPRT(layer_order=order, seed=42, abs=True, normalise=True, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    ours = model_randomization(model, x, ("saliency",), targets=y, mode=mode, block_seed=lambda i, name: 43,
                               metrics=("spearman_abs",), calibration=())
    assert set(theirs) == {"original", *ours.steps}
    for step in ours.steps:
        assert np.allclose(ours.scores["saliency"][step]["spearman_abs"].numpy(), theirs[step], atol=1e-6)
