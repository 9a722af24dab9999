"""sMPRT, eMPRT and the random-logit test by hand on a tiny linear model; smoothing as a mean of
explanations; and the reuse of unchanged modules across steps (same maps, fewer passes)."""

import math

import pytest
import torch

from attnscope import explain, models
from attnscope.errors import InputError
from attnscope.explain import Explainer
from attnscope.sanity import Comparison, Randomisation, emprt, model_randomization, random_logit, smprt
from attnscope.sanity.repaired import noise_draws, smoothed_maps
from attnscope.sanity.reuse import PrefixReuse
from test_sanity_randomization import ABS, RANKS, SIGNED, Tiny, patterned


def test_random_logit_by_hand():
    # saliency of class 0 is row 0 of A = (1, 2, 3, 4); of class 1 (the only other class) (4, 3, 2, 1)
    r = random_logit(Tiny(), torch.rand(3, 1, 1, 4), SIGNED, targets=0, comparison=RANKS)
    assert r.steps == ["random class"] and r.meta["other"] == [1, 1, 1]
    assert r.value("saliency", "random class", "spearman_signed") == pytest.approx(-1.0)
    with pytest.raises(InputError, match="differ"):
        random_logit(Tiny(), torch.rand(2, 1, 1, 4), ("saliency",), targets=0, other=torch.tensor([0, 1]),
                     comparison=RANKS)


def test_random_logit_draws_only_other_classes():
    m = models.get("smallcnn", widths=[4, 8])
    r = random_logit(m, torch.rand(8, 3, 16, 16), "saliency", targets=torch.arange(8), seed=3, comparison=ABS)
    assert all(o != t and 0 <= o < 10 for o, t in zip(r.meta["other"], range(8), strict=True))


def flat_pattern(parts):
    """Every block re-initialised so that the saliency of class 0 becomes (1, 1, 1, 4)."""
    weights = {"b": [[1.0, 0.0], [0.0, 1.0]], "a": [[1.0, 1.0, 1.0, 4.0], [0.0, 0.0, 0.0, 0.0]]}
    for name, module in parts:
        module.weight.copy_(torch.tensor(weights[name]))


def test_emprt_by_hand():
    r = emprt(Tiny(), torch.rand(2, 1, 1, 4), SIGNED, targets=0, bins=3,
              randomisation=Randomisation(init=flat_pattern), comparison=Comparison(calibration=()))
    # trained (1, 2, 3, 4) in 3 bins [1, 2), [2, 3), [3, 4]: counts 1, 1, 2; randomised (1, 1, 1, 4): 3, 0, 1
    h_t = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    h_r = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert r.value("saliency", "all blocks", "entropy_trained") == pytest.approx(h_t)
    assert r.value("saliency", "all blocks", "entropy_random") == pytest.approx(h_r)
    assert r.value("saliency", "all blocks", "complexity_rise") == pytest.approx((h_r - h_t) / h_t)


def test_smoothed_maps_are_the_mean_of_the_noisy_explanations():
    m = models.get("smallcnn", widths=[4, 8]).eval()
    x = torch.rand(3, 3, 16, 16)
    noise = noise_draws(x, samples=4, sigma=0.2, seed=1)
    assert noise.shape == (4, 3, 3, 16, 16)
    assert noise[:, 0].std() == pytest.approx(0.2 * float(x[0].max() - x[0].min()), rel=0.2)
    ours = smoothed_maps(m, x, noise, Explainer(("saliency", "gradcam"), batch_size=5), targets=torch.tensor([1, 2, 3]))
    for name in ("saliency", "gradcam"):
        each = torch.stack([explain(m, x + noise[j], name, torch.tensor([1, 2, 3]))[name].values for j in range(4)])
        assert torch.allclose(ours[name], each.mean(0), atol=1e-6)


def test_smprt_without_noise_is_the_bottom_up_cascade():
    m = models.get("smallcnn", widths=[4, 8])
    x = torch.rand(2, 3, 16, 16)
    kw = dict(targets=torch.tensor([0, 1]), comparison=ABS)
    smooth = smprt(m, x, ("saliency",), samples=2, sigma=0.0, **kw)
    plain = model_randomization(m, x, ("saliency",), randomisation=Randomisation(order="bottom-up"), **kw)
    assert smooth.steps == plain.steps == ["features.0.0", "features.0.1", "features.1.0", "features.1.1", "fc"]
    for step in plain.steps:
        assert torch.allclose(smooth.scores["saliency"][step]["spearman_abs"],
                              plain.scores["saliency"][step]["spearman_abs"], atol=1e-6)


def test_bottom_up_cascade_by_hand():
    r = model_randomization(Tiny(), torch.rand(2, 1, 1, 4), SIGNED, targets=0,
                            randomisation=Randomisation(order="bottom-up", init=patterned), comparison=RANKS)
    assert r.steps == ["a", "b"]
    # step 1: A = pattern, B = identity: (−2, 1, −4, 3) (signed ρ 0.4); step 2: B swaps too: (1, 3, 2, 4) (0.8)
    assert r.value("saliency", "a", "spearman_signed") == pytest.approx(0.4)
    assert r.value("saliency", "b", "spearman_signed") == pytest.approx(0.8)


def test_reuse_gives_the_same_maps_with_fewer_passes(monkeypatch):
    m = models.get("smallcnn", widths=[4, 8])
    x = torch.rand(3, 3, 16, 16)
    runs = []
    conv = torch.nn.Conv2d._conv_forward
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", lambda self, *a: runs.append(1) or conv(self, *a))
    kw = dict(targets=torch.tensor([0, 1, 2]), comparison=Comparison(("spearman_abs", "ssim"), calibration=(), keep=0))
    methods = ("gradcam", "saliency", "guided-backprop", "ig")
    how = Explainer(methods, options={"ig": {"steps": 4, "batch_size": 5}})
    fresh = model_randomization(m, x, how, randomisation=Randomisation(reuse=False), **kw)
    plain_runs = len(runs)
    runs.clear()
    again = model_randomization(m, x, how, randomisation=Randomisation(reuse=True), **kw)
    assert again.meta["reused"]["hits"] > 0
    for name in methods:
        for step in fresh.steps:
            for metric in ("spearman_abs", "ssim"):
                assert torch.equal(fresh.scores[name][step][metric], again.scores[name][step][metric])
    assert len(runs) < 0.8 * plain_runs  # convolutions computed, all steps together


def test_reuse_replays_the_prefix_and_its_gradient():
    m = models.get("smallcnn", widths=[4, 8]).eval()
    x = torch.rand(4, 3, 16, 16)
    reuse = PrefixReuse(m, x)
    calls = []
    m.fc.register_forward_hook(lambda *a: calls.append("fc"))
    first = m.features[0][0]
    original = first.forward
    counted = []

    def counting(t):
        counted.append(1)
        return original(t)

    first.forward = counting
    try:
        def grad():
            z = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(m(z)[:, 3].sum(), z)
            return g

        want = grad()
        counted.clear()
        with reuse.step(reuse.start_of("fc")):  # everything below fc is unchanged
            a = grad()
            b = grad()
        assert torch.equal(a, want) and torch.equal(b, want)
    finally:
        del first.forward
    assert reuse.hits >= 1 and reuse.misses >= 1
    assert not any("forward" in vars(mod) for mod in m.modules())  # wrappers removed
    assert not m._forward_pre_hooks


def test_reused_outputs_survive_in_place_ops_downstream():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            h.mul_(2)  # edits the replayed tensor in place
            return self.b(h)

    m = InPlace().eval()
    x = torch.rand(3, 4)
    want = m(x)
    reuse = PrefixReuse(m, x)
    with reuse.step(reuse.start_of("b")), torch.no_grad():
        assert torch.equal(m(x), want) and torch.equal(m(x), want) and reuse.hits == 1


def test_smprt_and_random_logit_default_metrics_fit_the_image_size():
    # metrics=None (what the CLI passes without --metrics): the defaults less HOG under 48 px, with a note,
    # as model_randomization does (before, both refused: "give at least one similarity metric")
    m = models.get("smallcnn", widths=[4, 8])
    x = torch.rand(2, 3, 32, 32)
    for result in (smprt(m, x, ("saliency",), samples=2, randomisation=Randomisation(blocks=2)),
                   random_logit(m, x, ("saliency",))):
        assert result.meta["metrics"] == ["spearman_abs", "spearman_signed", "ssim"]
        assert any("hog" in note.lower() for note in result.meta["notes"])
