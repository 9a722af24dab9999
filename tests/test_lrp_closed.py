"""zennit's z⁺, α β, γ, flat and Norm-of-a-sum rules in closed form (`explain.relevance_closed`): element for
element the term-by-term evaluation, hand-computed on fixed-weight layers, and term by term where a form does not
apply."""

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.explain import relevance, relevance_closed

zennit = pytest.importorskip("zennit")
from zennit.composites import EpsilonPlusFlat  # noqa: E402
from zennit.core import Stabilizer, stabilize  # noqa: E402
from zennit.rules import AlphaBeta, Flat, Gamma, Norm, ZPlus  # noqa: E402

from test_explain_attributions import randomise_batchnorm  # noqa: E402


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each closed form was built and how often it answered (not None) during the test."""
    counts = {"built": 0, "answered": 0, "declined": 0}
    original = relevance_closed.closed_form

    def spying(*args):
        closed = original(*args)
        if closed is None:
            return None
        counts["built"] += 1

        def spy(x, y, r):
            done = closed(x, y, r)
            counts["answered" if done is not None else "declined"] += 1
            return done

        return spy

    monkeypatch.setattr(relevance_closed, "closed_form", spying)
    return counts


def term_by_term(monkeypatch: pytest.MonkeyPatch, run):
    """`run()` with every layer evaluated term by term (no closed form)."""
    with monkeypatch.context() as m:
        m.setattr(relevance_closed, "closed_form", lambda *_: None)
        return run()


def test_stabilized_is_zennits_stabilize_number_for_number() -> None:
    special = torch.tensor([-2.0, -1e-7, -0.0, 0.0, 1e-7, 3.0, float("inf"), -float("inf"), float("nan"), -1e-6,
                            1e-6])
    z = torch.cat([special, torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e-5])
    for epsilon in (1e-6, 0.25, 1e-9):
        ours, theirs = relevance_closed.stabilized(z, epsilon), stabilize(z, epsilon)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def test_zplus_closed_form_on_a_hand_computed_layer() -> None:
    """Linear(2 → 1), w = (2, −1), b = 0.5, x = (1, 3), R = 5: z⁺ = 2·1 + 0·3 + 0.5 = 2.5 (the negative weight
    sees no positive input), R_in = x ⊙ w⁺ · R / (z⁺ + ε) = (1·2·5/2.5, 0) = (4, 0)."""
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.0]]))
        layer.bias.fill_(0.5)
    x = torch.tensor([[1.0, 3.0]])
    rule = relevance._Evaluated(layer, ZPlus(stabilizer=1e-6))
    assert rule.closed is not None
    got = rule(x, layer(x).detach(), torch.tensor([[5.0]]), None)
    assert torch.allclose(got, torch.tensor([[4.0, 0.0]]), rtol=1e-6, atol=0)
    # with a negative input the closed form declines and zennit's two terms apply: x⁻ = −3 meets w⁻ = −1
    x = torch.tensor([[1.0, -3.0]])
    assert rule.closed(x, None, torch.tensor([[5.0]])) is None
    z = 2.0 * 1 + 0.5 + (-1.0) * (-3.0)  # positive part 2.5, negative part's product 3 (no bias), summed
    got = rule(x, layer(x).detach(), torch.tensor([[5.0]]), None)
    assert torch.allclose(got, torch.tensor([[2.0 * 5 / z, 3.0 * 5 / z]]), rtol=1e-6, atol=0)


def test_alpha_beta_and_gamma_closed_forms_on_a_hand_computed_layer() -> None:
    """Linear(2 → 1), w = (2, −1), b = 0.5, R = 5.
    α2β1 at x = (1, 3): W⁺x + b⁺ = 2.5, W⁻x + b⁻ = −3 (b⁻ = min(b, 0) = 0):
    R_in = 2·(1·2·5/2.5, 0) − (0, 3·(−1)·5/(−3)) = (8, −5).
    γ = 0.25 at x = (1, 3): z = −0.5 < 0, so W + γW⁻ = (2, −1.25), b = 0.5: z⁻ = −1.25,
    R_in = (1·2, 3·(−1.25)) · 5/(−1.25) = (−8, 15); at x = (1, 1): z = 1.5 > 0, W + γW⁺ = (2.5, −1),
    b + γb⁺ = 0.625: z⁺ = 2.125, R_in = (2.5, −1) · 5/2.125."""
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.0]]))
        layer.bias.fill_(0.5)
    r = torch.tensor([[5.0]])
    cases = [(AlphaBeta(alpha=2.0, beta=1.0), [1.0, 3.0], [8.0, -5.0]),
             (Gamma(gamma=0.25), [1.0, 3.0], [-8.0, 15.0]),
             (Gamma(gamma=0.25), [1.0, 1.0], [2.5 * 5 / 2.125, -5 / 2.125])]
    for rule, x, expected in cases:
        evaluated, x = relevance._Evaluated(layer, rule), torch.tensor([x])
        got = evaluated.closed(x, layer(x).detach(), r)
        assert torch.allclose(got, torch.tensor([expected]), rtol=1e-5, atol=0), (rule, got)
        evaluated.closed = None
        assert torch.allclose(evaluated(x, layer(x).detach(), r, None), got, rtol=1e-6, atol=0)


def test_only_zennits_own_rules_with_a_plain_stabilizer_are_closed() -> None:
    conv = nn.Conv2d(2, 3, 3)
    assert relevance._Evaluated(conv, ZPlus()).closed is not None
    assert relevance._Evaluated(conv, Flat()).closed is not None
    assert relevance._Evaluated(conv, AlphaBeta(alpha=1.5, beta=0.5)).closed is not None
    assert relevance._Evaluated(conv, Gamma(gamma=0.5)).closed is not None
    assert relevance._Evaluated(conv, ZPlus(stabilizer=Stabilizer(1e-6, clip=True))).closed is None
    assert relevance._Evaluated(conv, ZPlus(stabilizer=lambda z: z + 1.0)).closed is None
    changed = ZPlus()
    changed.reducer = lambda inputs, gradients: 2 * inputs[0] * gradients[0]
    assert relevance._Evaluated(conv, changed).closed is None
    assert relevance._Evaluated(nn.AvgPool2d(2), Norm()).closed is None  # Norm is closed on zennit's Sum only


@pytest.mark.parametrize(("composite", "counts"), [
    ("epsilon-plus-flat", {"built": 28, "answered": 28, "declined": 0}),  # 19 z⁺, flat first layer, 8 sums
    ("epsilon-gamma-box", {"built": 27, "answered": 27, "declined": 0}),  # 19 γ, 8 sums; z^B term by term
    ("epsilon-alpha2-beta1", {"built": 28, "answered": 27, "declined": 1}),  # α β on the image declines
])
@pytest.mark.parametrize("nhwc", [False, True])
def test_closed_forms_give_resnet18s_relevance_element_for_element(monkeypatch, taken, composite, counts,
                                                                   nhwc) -> None:
    """torchvision's resnet18 under each composite (ResNet canonizer), 16 images of 64 px: in NCHW the maps equal
    the term-by-term evaluation's bit for bit; in NHWC (the pass of a large batch) the two evaluations hand the
    transposed convolutions relevances in different layouts, whose rounding differs: ≤ 1e-6 relative."""
    import attnscope.modules

    if nhwc:
        monkeypatch.setattr(attnscope.modules, "NHWC_MIN_PIXELS", 1)
    torch.manual_seed(0)
    model = randomise_batchnorm(ats.models.get("resnet18", num_classes=10))
    x = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.arange(16) % 10
    assert attnscope.modules.nhwc_pass(model, x) is nhwc

    def run() -> torch.Tensor:
        return ats.explain(model, x, "lrp", targets=t, options={"lrp": {"composite": composite}})["lrp"].values

    ours = run()
    assert taken == counts
    reference = term_by_term(monkeypatch, run)
    if nhwc:
        assert float((ours - reference).abs().max() / reference.abs().max()) <= 1e-6
    else:
        assert torch.equal(ours, reference)


def test_a_convolution_fed_negative_inputs_falls_back_to_the_terms(monkeypatch, taken) -> None:
    """Two convolutions without a ReLU between: the second sees negative inputs, so its z⁺ is evaluated term by
    term (both of zennit's terms), the first (flat) in closed form; equal to the term-by-term evaluation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    options = {"lrp": {"composite": "epsilon-plus-flat"}}

    def run() -> torch.Tensor:
        return ats.explain(model, x, "lrp", targets=torch.tensor([0, 2]), options=options)["lrp"].values

    ours = run()
    assert taken == {"built": 2, "answered": 1, "declined": 1}
    assert torch.equal(ours, term_by_term(monkeypatch, run))


def test_sum_norm_lays_each_summand_out_as_its_relevance() -> None:
    """Norm on zennit's Sum: R_in = x ⊙ R / (Σx + ε) broadcast over the summed axis; with an NHWC relevance each
    summand's relevance is an NHWC block (no strided slice for the next convolution to copy)."""
    from zennit.layer import Sum

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 2, generator=g)
    y = x.sum(-1)
    r = torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=torch.channels_last)
    rule = relevance._Evaluated(Sum(), Norm(stabilizer=1e-6))
    got = rule.closed(x, y, r)
    expected = x * (r / stabilize(y, 1e-6)).unsqueeze(-1)
    assert torch.equal(got, expected)
    for k in range(2):
        assert got[..., k].is_contiguous(memory_format=torch.channels_last)


def test_flat_closed_form_is_the_rule_for_any_input() -> None:
    """The flat rule ignores its input's values: NaN images give the same relevance as any other."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    rule = relevance._Evaluated(conv, Flat())
    r = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(4))
    x = torch.randn(2, 3, 5, 5)
    plain = rule(x, None, r, None)
    assert torch.equal(rule(torch.full_like(x, float("nan")), None, r, None), plain)
    rule.closed = None
    assert torch.equal(rule(x, None, r, None), plain)


def test_epsilon_plus_flat_composite_is_what_the_closed_forms_read() -> None:
    """The default composite's rules are zennit's own classes with plain stabilizers, so the closed forms apply."""
    composite = EpsilonPlusFlat()
    conv = nn.Conv2d(3, 3, 3)
    ctx: dict = {}
    first = composite.module_map(ctx, "conv1", conv)
    later = composite.module_map(ctx, "layer1.0.conv1", nn.Conv2d(3, 3, 3))
    assert type(first) is Flat and type(later) is ZPlus
    assert relevance_closed.closed_form(conv, first, relevance._terms(conv, first), relevance._conv_op(conv))
    assert relevance_closed.closed_form(conv, later, relevance._terms(conv, later), relevance._conv_op(conv))
