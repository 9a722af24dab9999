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
from attnscope.sanity import Comparison, Randomisation, model_randomization

ABS = Comparison(("spearman_abs",), calibration=())

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import quantus


@pytest.mark.parametrize("mode, order", [("cascading", "top_down"), ("independent", "independent")])
def test_matches_quantus_mprt(mode, order):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = models.get("smallcnn", in_channels=1, widths=[4, 8]).eval()
        x, y = torch.rand(3, 1, 32, 32), torch.tensor([0, 1, 2])
        theirs = quantus.MPRT(layer_order=order, seed=42, abs=True, normalise=True, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    ours = model_randomization(model, x, ("saliency",), targets=y, mode=mode,
                               randomisation=Randomisation(block_seed=lambda i, name: 43), comparison=ABS)
    assert set(theirs) == {"original", *ours.steps}
    for step in ours.steps:
        assert np.allclose(ours.scores["saliency"][step]["spearman_abs"].numpy(), theirs[step], atol=1e-6)


def _quantus_setup():
    model = models.get("smallcnn", in_channels=1, widths=[4, 8]).eval()
    x = torch.rand(3, 1, 32, 32)
    return model, x, model(x).argmax(1)


def test_smprt_matches_quantus_smooth_mprt_on_the_same_noise(monkeypatch):
    import quantus.metrics.randomisation.smooth_mprt as smooth

    from attnscope.sanity import smprt

    model, x, y = _quantus_setup()
    n, sigma = 4, 0.1
    z = torch.randn(n - 1, *x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    calls = iter(range(10**6))
    # Quantus draws np.random.randn for N − 1 noisy copies per explanation (the N-th is the clean input):
    # replay the same N − 1 draws for every explanation, as attnscope uses the same draws at every step
    monkeypatch.setattr(smooth.np.random, "randn", lambda *shape: z[next(calls) % (n - 1)].numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.SmoothMPRT(layer_order="bottom_up", seed=42, nr_samples=n, noise_magnitude=sigma, abs=True,
                                    normalise=True, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    scale = sigma * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).double()
    noise = torch.cat([z * scale.view(1, -1, 1, 1, 1), torch.zeros(1, *x.shape, dtype=torch.float64)]).float()
    ours = smprt(model, x, ("saliency",), targets=y, samples=noise,
                 randomisation=Randomisation(block_seed=lambda i, name: 43), comparison=ABS)
    assert ours.meta["order"] == "bottom-up" and ours.steps[0] == "features.0.0"
    assert set(theirs) == {"original", *ours.steps}
    for step in ours.steps:
        assert np.allclose(ours.scores["saliency"][step]["spearman_abs"].numpy(), theirs[step], atol=1e-5)


def test_emprt_matches_quantus_efficient_mprt():
    from attnscope.sanity import emprt

    model, x, y = _quantus_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.EfficientMPRT(layer_order="bottom_up", seed=42, abs=False, normalise=False,
                                       disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    ours = emprt(model, x, ("saliency",), targets=y, randomisation=Randomisation(block_seed=lambda i, name: 43),
                 comparison=Comparison(calibration=()))
    assert np.allclose(ours.scores["saliency"]["all blocks"]["complexity_rise"].numpy(), theirs, atol=1e-5)


def test_random_logit_matches_quantus_on_the_same_classes():
    from quantus.functions.similarity_func import correlation_spearman

    from attnscope.sanity import random_logit

    model, x, y = _quantus_setup()
    np.random.seed(42)  # Quantus' draw: an index among the other classes, in increasing order
    pick = torch.from_numpy(np.random.randint(0, 9, 3))
    other = pick + (pick >= y).long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.RandomLogit(num_classes=10, seed=42, similarity_func=correlation_spearman, abs=False,
                                     normalise=True, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    ours = random_logit(model, x, ("saliency",), targets=y, other=other,
                        comparison=Comparison(("spearman_signed",), calibration=()))
    assert ours.meta["other"] == other.tolist()
    assert np.allclose(ours.scores["saliency"]["random class"]["spearman_signed"].numpy(), theirs, atol=1e-5)
