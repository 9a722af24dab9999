"""Every metric Quantus also has, against Quantus (and captum for infidelity and sensitivity), on the
same model, inputs, maps and perturbation draws.

Where the definitions agree the numbers agree to 1e-5. The settings below pin what Quantus does
differently by default, each measured in `docs/sanity.md` ("Agreement with Quantus and captum"):
- maps are given unnormalised (`normalise=False`): Quantus divides a batch by its *batch-wide*
  maximum, which changes the per-image metrics that are not scale-free (effective complexity, the
  +1e-7 of its Gini) and nothing else;
- one-channel images: Quantus broadcasts a (B, 1, H, W) map over the channels and perturbs single
  channel values, where attnscope perturbs whole pixels; with one channel the two are the same;
- a fixed baseline of 0 (Quantus' "black" is each image's minimum, 0 here; its IROF "mean" is the
  mean of the whole batch, recomputed after every segment).
"""

import warnings

import numpy as np
import pytest
import torch

from attnscope import metrics, models
from attnscope.evaluate.robustness import robustness
from attnscope.evaluate.scorers import class_logit, correct_class

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import quantus

B, H = 4, 16


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.get("smallcnn", in_channels=1, widths=[4, 8]).eval()
    x = torch.rand(B, 1, H, H)
    y = model(x).argmax(1)
    a = torch.rand(B, H, H) + 0.01 * torch.arange(H * H).view(H, H) / (H * H)  # no ties
    return model, x, y, a


def q(metric_cls, setup, **call):
    model, x, y, a = setup
    kwargs = dict(disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = metric_cls(**{**kwargs, **call.pop("init", {})})
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(), device="cpu",
                     **call)
    return np.asarray(list(out.values()) if isinstance(out, dict) else out, dtype=np.float64)


def close(ours, theirs, tol=1e-5):
    ours = np.asarray(ours.detach().cpu().numpy() if torch.is_tensor(ours) else ours, dtype=np.float64)
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, atol=tol, rtol=0, equal_nan=True), np.abs(ours - theirs).max()


def test_complexity_family(setup):
    a = setup[3]
    close(metrics.sparseness(a), q(quantus.Sparseness, setup, init=dict(normalise=False)))
    close(metrics.complexity(a), q(quantus.Complexity, setup, init=dict(normalise=False)))
    # ours scales each map by its own maximum before the threshold: give Quantus maps scaled so
    scaled = a / a.flatten(1).amax(1)[:, None, None]
    close(metrics.effective_complexity(a),
          q(quantus.EffectiveComplexity, (*setup[:3], scaled), init=dict(normalise=False)))


def test_localisation_family(setup):
    a = setup[3]
    s = torch.zeros(B, H, H, dtype=torch.bool)
    s[:, 3:9, 4:12] = True
    s[1, 10:, 10:] = True
    call = dict(s_batch=s[:, None].numpy())
    close(metrics.top_k_intersection(a, s, k=20),
          q(quantus.TopKIntersection, setup, init=dict(k=20, normalise=False), **call))
    close(metrics.roc_auc(a, s), q(quantus.AUC, setup, init=dict(normalise=False), **call))
    close(metrics.relevance_mass(a, s), q(quantus.RelevanceMassAccuracy, setup, init=dict(normalise=False), **call))
    close(metrics.relevance_rank(a, s), q(quantus.RelevanceRankAccuracy, setup, init=dict(normalise=False), **call))
    close(metrics.pointing_game(a, s), q(quantus.PointingGame, setup, init=dict(normalise=False), **call))


def test_focus(setup):
    model, x, y, a = setup
    quads = torch.tensor([[True, False, False, True], [False, True, False, False],
                          [True, True, False, False], [False, False, True, False]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.Focus(disable_warnings=True, normalise=False)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(), device="cpu",
            custom_batch=quads.numpy().astype(int))
    close(metrics.focus(a, quads), np.asarray(theirs), tol=1e-7)


def test_pixel_flipping_region_perturbation_monotonicity(setup):
    model, x, y, a = setup
    f = class_logit(model, y)
    flip = metrics.pixel_flipping(a, x, f, "zero", step=8)
    theirs = q(quantus.PixelFlipping, setup, init=dict(features_in_step=8, perturb_baseline=0.0, normalise=False),
               softmax=False)
    close(flip[:, 1:], theirs)  # Quantus' curve starts after the first step
    regions = metrics.region_perturbation(a, x, f, patch=4, regions=10, substrate="zero")
    theirs = q(quantus.RegionPerturbation, setup, init=dict(patch_size=4, regions_evaluation=10,
                                                            perturb_baseline=0.0, normalise=False), softmax=False)
    close(regions[:, :1] - regions[:, 1:], theirs)  # Quantus reports the drops f(x) − f(x_k)


def test_monotonicity_against_the_aix360_loop(setup):
    model, x, y, a = setup
    f = class_logit(model, y)
    ours = metrics.monotonicity(a, x, f, "zero", step=16)
    want = []
    for i in range(B):  # AIX360's monotonicity_metric, 16 pixels per addition
        order = np.argsort(a[i].flatten().numpy(), kind="stable")
        copy, scores = torch.zeros_like(x[i]).flatten(), []
        for j in range(0, H * H, 16):
            copy[order[j : j + 16]] = x[i].flatten()[order[j : j + 16]]
            scores.append(f(copy.view(1, 1, H, H), torch.tensor([i])).item())
        want.append(float(np.all(np.diff(scores) >= 0)))
    close(ours, np.asarray(want))
    # Quantus' Monotonicity writes the baseline value into the baseline image at every step, so the
    # model never sees the image and every map, even a reversed one, comes out monotone
    for maps in (a, a.max() - a):
        theirs = q(quantus.Monotonicity, (model, x, y, maps), init=dict(features_in_step=16, perturb_baseline=0.0,
                                                                         normalise=False, abs=False), softmax=False)
        assert theirs.tolist() == [1.0] * B


def test_faithfulness_correlation_with_quantus_draws(setup):
    model, x, y, a = setup
    runs, size = 30, 40
    np.random.seed(7)  # replay Quantus' draws: per run, one np.random.choice per image
    subsets = np.stack([np.stack([np.random.choice(H * H, size, replace=False) for _ in range(B)])
                        for _ in range(runs)], axis=1)  # (B, runs, size)
    ours = metrics.faithfulness_correlation(a, x, class_logit(model, y), subsets=torch.from_numpy(subsets))
    np.random.seed(7)
    theirs = q(quantus.FaithfulnessCorrelation, setup, init=dict(nr_runs=runs, subset_size=size, perturb_baseline=0.0,
                                                                 normalise=False, return_aggregate=False),
               softmax=False)
    close(ours, theirs)


def test_irof_on_the_same_segments(setup):
    model, x, y, a = setup
    f = lambda z, i: class_logit(model, y)(z, i).exp()  # noqa: E731  a positive score (Quantus divides by it)
    rel, counts = metrics.irof_curve(a, x, f, substrate="zero")
    theirs = _irof_quantus(setup)
    # Quantus: area over the curve after the first removal, not normalised: S − trapz(c_1 … c_S)
    want = [s - np.trapezoid(rel[i, 1 : s + 1].numpy()) for i, s in enumerate(counts.tolist())]
    close(np.asarray(want), theirs)


def _irof_quantus(setup):
    model, x, y, a = setup

    class Exp(torch.nn.Module):  # the same positive score: exp(logit)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, z):
            return self.m(z).exp()

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz, gone in NumPy 2.4
        out = quantus.IROF(perturb_baseline=0.0, normalise=False, return_aggregate=False, disable_warnings=True)(
            model=Exp(model).eval(), x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(), device="cpu",
            softmax=False)
    return np.asarray(out, dtype=np.float64)


def test_road_without_noise(setup):
    model, x, y, a = setup
    levels = [10, 30, 50, 70, 90]
    ours = metrics.road_curve(a, x, correct_class(model, y), percentages=levels, noise=0.0)
    theirs = q(quantus.ROAD, setup, init=dict(percentages=levels, noise=0.0, normalise=False))
    close(ours.mean(0), theirs)  # Quantus keeps the mean over images per percentage


def test_infidelity_against_captum(setup):
    from captum.metrics import infidelity as captum_infidelity

    model, x, y, a = setup
    g = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(B, 6, 1, H, H, generator=g)
    ours = metrics.infidelity(a, x, class_logit(model, y), perturbations=noise)

    def perturb(inputs):  # captum repeats each image n times (image-major) and perturbs them all at once
        i = noise.flatten(0, 1)
        return i, inputs - i

    theirs = captum_infidelity(model, perturb, x, a[:, None], target=y, n_perturb_samples=6)
    close(ours, theirs.double().numpy(), tol=1e-6)
    theirs = captum_infidelity(model, perturb, x, a[:, None], target=y, n_perturb_samples=6, normalize=True)
    close(metrics.infidelity(a, x, class_logit(model, y), perturbations=noise, normalize=True),
          theirs.double().numpy(), tol=1e-6)


def _replay(perturbed: torch.Tensor):
    """A Quantus perturb_func that returns our perturbed copies, sample by sample."""
    draws = iter(perturbed.transpose(0, 1).flatten(2).numpy())

    def perturb(arr, indices, **kwargs):
        return next(draws).astype(arr.dtype)

    return perturb


@pytest.mark.parametrize("name, metric_cls, init", [
    ("max_sensitivity", quantus.MaxSensitivity, {}),
    ("avg_sensitivity", quantus.AvgSensitivity, {}),
    ("local_lipschitz", quantus.LocalLipschitzEstimate, {"normalise": False}),
    ("ris", quantus.RelativeInputStability, {}),
    ("ros", quantus.RelativeOutputStability, {}),
])
def test_robustness_against_quantus(setup, name, metric_cls, init):
    model, x, y, _ = setup
    n = 5
    g = torch.Generator().manual_seed(1)
    perturbed = x[:, None] + 0.01 * (2 * torch.rand(B, n, 1, H, H, generator=g) - 1)
    ours = robustness(model, x, "saliency", targets=y, metrics=[name], perturbed=perturbed)["saliency"][name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = metric_cls(nr_samples=n, perturb_func=_replay(perturbed), disable_warnings=True, **init)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, device="cpu",  # explains x
                        explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"}, softmax=False)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert np.isfinite(theirs).all() and (theirs > 0).all()
    close(ours, theirs, tol=1e-5 * max(1.0, float(np.abs(theirs).max())))


def test_max_sensitivity_against_captum(setup):
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    model, x, y, _ = setup
    n = 5
    g = torch.Generator().manual_seed(2)
    perturbed = x[:, None] + 0.02 * (2 * torch.rand(B, n, 1, H, H, generator=g) - 1)
    ours = robustness(model, x, "saliency", targets=y, metrics=["max_sensitivity"], perturbed=perturbed)
    theirs = sensitivity_max(Saliency(model).attribute, x, perturb_func=lambda inputs: perturbed.flatten(0, 1),
                             n_perturb_samples=n, target=y)
    close(ours["saliency"]["max_sensitivity"], theirs.double().numpy(), tol=1e-6)
