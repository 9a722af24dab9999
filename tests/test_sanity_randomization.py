"""Model and data randomisation tests: a hand-computed cascade on a tiny linear model, block tracing,
re-initialisation, and that the user's model is never touched."""

import copy

import pytest
import torch
from torch import nn

from attnscope import models
from attnscope.errors import InputError, UnknownNameError
from attnscope.explain import Explainer
from attnscope.sanity import Comparison, Randomisation, data_randomization, model_randomization, trace_blocks
from attnscope.sanity.blocks import reinitialise

W_A = [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]
PATTERNS = {"b": [[0.0, 1.0], [1.0, 0.0]], "a": [[-2.0, 1.0, -4.0, 3.0], [1.0, 3.0, 2.0, 4.0]]}
SIGNED = Explainer("saliency", options={"saliency": {"reduce": "sum"}})  # the plain gradient: signed ≠ absolute ranks
RANKS = Comparison(("spearman_abs", "spearman_signed"), calibration=())
ABS = Comparison(("spearman_abs",), calibration=())


class Tiny(nn.Module):
    """y = B A x on a 1×4 image; `b` is registered first but runs second."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Linear(2, 2, bias=False)
        self.a = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor(W_A))
            self.b.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x.flatten(1)))


def patterned(parts):
    """A re-initialisation whose 'random' weights are known: the gradient of class 0 becomes a known row."""
    for name, module in parts:
        module.weight.copy_(torch.tensor(PATTERNS[name]))


def _run(mode, **kw):
    return model_randomization(Tiny(), torch.rand(3, 1, 1, 4), SIGNED, targets=0, mode=mode,
                               randomisation=Randomisation(init=patterned, **kw), comparison=RANKS)


def test_cascade_by_hand():
    r = _run("cascading")
    assert r.steps == ["b", "a"]  # top-down from the logits, in execution order (not registration order)
    # trained map (W_B W_A)[0] = (1, 2, 3, 4)
    # step 1, B = swap: (4, 3, 2, 1) → ρ = −1
    # step 2, B = swap and A = pattern: row 1 of A = (1, 3, 2, 4): Σd² = 2, ρ = 1 − 12/60 = 0.8
    expected = {("b", m): -1.0 for m in RANKS.metrics} | {("a", m): 0.8 for m in RANKS.metrics}
    for row in r.rows():
        assert row["mean"] == pytest.approx(expected[(row["block"], row["metric"])], abs=1e-12)
        assert row["n"] == 3 and row["ci_low"] == pytest.approx(row["mean"]) == pytest.approx(row["ci_high"])
    # only randomised steps: the trained model's self-similarity (1) is never averaged in (as Quantus' MPRT does)
    assert {row["block"] for row in r.rows()} == {"b", "a"}


def test_independent_by_hand_restores_the_other_blocks():
    r = _run("independent")
    assert r.value("saliency", "b", "spearman_signed") == pytest.approx(-1.0)
    # step 2: only A randomised, B back to the identity: map = row 0 of A = (−2, 1, −4, 3)
    # signed ranks (2, 3, 1, 4): Σd² = 6 → 0.4; absolute (2, 1, 4, 3): Σd² = 4 → 0.6
    assert r.value("saliency", "a", "spearman_signed") == pytest.approx(0.4, abs=1e-12)
    assert r.value("saliency", "a", "spearman_abs") == pytest.approx(0.6, abs=1e-12)


def test_data_randomization_by_hand():
    swapped = Tiny()
    with torch.no_grad():
        swapped.b.weight.copy_(torch.tensor(PATTERNS["b"]))
    r = data_randomization(Tiny(), swapped, torch.rand(2, 1, 1, 4), SIGNED, targets=0, comparison=RANKS,
                           info={"fit_acc": 1.0})
    assert r.steps == ["permuted-labels"] and r.meta["fit_acc"] == 1.0
    assert r.value("saliency", "permuted-labels", "spearman_signed") == pytest.approx(-1.0)


def test_smallcnn_blocks_in_execution_order():
    m = models.get("smallcnn", widths=[8, 16])
    x = torch.rand(1, 3, 32, 32)
    layers = ["features.0.0", "features.0.1", "features.1.0", "features.1.1", "fc"]
    assert [b.name for b in trace_blocks(m, x)] == layers
    assert [b.name for b in trace_blocks(m, x, 2)] == ["features.0", "features.1", "fc"]
    assert [b.name for b in trace_blocks(m, x, ["fc", "features.1"])] == ["features.1", "fc"]


def test_default_init_is_reset_parameters_under_the_seed_and_keeps_the_global_rng():
    m = models.get("smallcnn", widths=[8, 16])
    conv = trace_blocks(m, torch.rand(1, 3, 32, 32))[2]  # features.1.0
    before = torch.get_rng_state()
    reinitialise(conv, "default", seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    fresh = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    assert torch.equal(conv.module.weight, fresh.weight)


def test_norm_layers_back_to_identity_and_trunc_normal_range():
    m = models.get("smallcnn", widths=[8, 64])
    bn = m.features[1][1]
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(5.0)
    for block in trace_blocks(m, torch.rand(1, 3, 32, 32), 2):
        reinitialise(block, "trunc-normal", seed=1)
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    assert torch.equal(bn.running_mean, torch.zeros(64)) and torch.equal(bn.running_var, torch.ones(64))
    w = m.features[1][0].weight
    assert w.abs().max() <= 0.02 and 0.007 < w.std() < 0.011  # N(0, 0.01²) cut at ±2σ has σ ≈ 0.0088


def test_model_untouched_and_maps_shared_per_step():
    m = models.get("smallcnn", widths=[8, 16]).train()
    m.fc.weight.requires_grad_(False)
    state = copy.deepcopy(m.state_dict())
    m.register_forward_hook(lambda *a: None)
    r = model_randomization(m, torch.rand(4, 3, 48, 48), ("gradcam", "saliency"),
                            randomisation=Randomisation(seed=3), comparison=Comparison(("spearman_abs",), keep=2))
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())  # BN statistics included
    assert m.training and all(mod.training for mod in m.modules()) and not m.fc.weight.requires_grad
    assert len(m._forward_hooks) == 1 and all(not mod._forward_pre_hooks for mod in m.modules())
    assert list(r.maps) == ["trained", *r.steps] and r.maps["fc"]["gradcam"].shape == (2, 48, 48)
    assert r.meta["seeds"] == {"features.0.0": 3, "features.0.1": 4, "features.1.0": 5, "features.1.1": 6, "fc": 7}


def test_one_shared_forward_per_step_for_methods_asked_together():
    m = models.get("smallcnn", widths=[8, 16])
    forwards = []
    m.fc.register_forward_hook(lambda *a: forwards.append(1))  # survives the deep copy
    model_randomization(m, torch.rand(2, 3, 32, 32), ("gradcam", "saliency"), comparison=ABS)
    # block trace + reuse trace + auto layer + trained maps + one per block: the two methods share every pass;
    # + 1 probe at another input size, once, because the (16, 16, 16) features fit both (C, h, w) and (h, w, C)
    assert len(forwards) <= 4 + 5 + 1


def test_calibration_rows_floor_and_ceiling():
    m = models.get("smallcnn", widths=[8, 16])
    r = model_randomization(m, torch.rand(4, 3, 48, 48), "saliency", comparison=Comparison(("spearman_abs", "ssim")))
    for step in r.steps:
        assert abs(r.value("random", step, "spearman_abs")) < 0.05
        assert r.value("sobel", step, "spearman_abs") == pytest.approx(1.0)
        assert r.value("sobel", step, "ssim") == pytest.approx(1.0)


def test_same_seed_same_numbers():
    m = models.get("smallcnn", widths=[8, 16])
    x = torch.rand(3, 3, 32, 32)
    run = lambda **kw: model_randomization(m, x, "saliency", randomisation=Randomisation(blocks=2, **kw),
                                           comparison=ABS)
    a, b = run(seed=1), run(seed=1)
    c = run(seed=2)
    assert a.rows() == b.rows() and a.rows() != c.rows()
    d = run(block_seed=lambda i, name: 43)
    assert set(d.meta["seeds"].values()) == {43}


def test_bad_arguments_raise():
    m, x = models.get("smallcnn", widths=[8, 16]), torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="mode"):
        model_randomization(m, x, ("saliency",), mode="bottom-up")
    with pytest.raises(UnknownNameError, match="method"):
        model_randomization(m, x, ("salincy",))
    with pytest.raises(UnknownNameError, match="similarity"):
        model_randomization(m, x, ("saliency",), comparison=Comparison(("pearson",)))
    with pytest.raises(UnknownNameError, match="re-initialisation"):
        model_randomization(m, x, ("saliency",), randomisation=Randomisation(init="xavier"))
    with pytest.raises(UnknownNameError, match="block"):
        model_randomization(m, x, ("saliency",), randomisation=Randomisation(blocks=["features.9"]))
    with pytest.raises(InputError, match="blocks must be"):
        model_randomization(m, x, ("saliency",), randomisation=Randomisation(blocks=1.5))
    with pytest.raises(InputError, match="order must be"):
        Randomisation(order="sideways")
    with pytest.raises(InputError, match="'scale' .* has no reset_parameters"):
        model_randomization(_NoReset(), torch.rand(1, 3, 2, 2), ("saliency",), comparison=ABS)


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale, self.fc = _Scale(), nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.scale(x).flatten(1))


def test_channels_last_gives_the_same_numbers():
    m, x = models.get("smallcnn", widths=[8, 16]), torch.rand(3, 3, 32, 32)
    run = lambda nhwc: model_randomization(m, x, ("gradcam", "saliency"), comparison=ABS,
                                           randomisation=Randomisation(blocks=2, channels_last=nhwc))
    plain, nhwc = run(False), run(True)
    for a, b in zip(plain.rows(), nhwc.rows(), strict=True):
        assert (a["method"], a["block"]) == (b["method"], b["block"])
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-5)


def test_a_step_whose_maps_are_all_constant_is_said_in_the_notes():
    """Zeroing the conv or the head leaves the output the head's bias: every saliency map is 0, Spearman undefined."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def zero(parts):
        for _, module in parts:
            for p in module.parameters(recurse=False):
                p.zero_()

    result = model_randomization(m, torch.rand(3, 3, 16, 16), ("saliency",), mode="independent",
                                 randomisation=Randomisation(init=zero), comparison=ABS)
    notes = [n for n in result.meta["notes"] if "constant" in n]
    assert notes == [f"{b}: every saliency map is constant (the model's output no longer depends on the image), "
                     "so its similarities are undefined (n = 0)" for b in ("4", "0")]
    assert [r["n"] for r in result.rows()] == [0, 0]


def test_the_keywords_of_the_last_release_still_work_with_a_warning():
    m, x = models.get("smallcnn", widths=[8, 16]), torch.rand(2, 3, 32, 32)
    new = model_randomization(m, x, Explainer("gradcam", layer="features"), mode="independent",
                              randomisation=Randomisation(blocks=2, seed=5), comparison=Comparison(("spearman_abs",),
                                                                                                 keep=1))
    with pytest.warns(DeprecationWarning, match=r"model_randomization\(.*methods=.*how="):
        old = model_randomization(m, x, methods=("gradcam",), layer="features", mode="independent", blocks=2, seed=5,
                                  metrics=("spearman_abs",), keep=1)
    assert old.rows() == new.rows() and old.meta["seeds"] == new.meta["seeds"]
    with pytest.raises(TypeError, match="not both"):
        model_randomization(m, x, "gradcam", methods=("saliency",))
