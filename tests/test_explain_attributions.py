"""LRP (zennit), FullGrad, DeepLIFT, DeepLIFT-SHAP and GradientSHAP: against the reference libraries called
directly on the same models and inputs, and the properties that pin them (completeness, LRP-0 = input × grad)."""

import copy
import sys
import warnings

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, DeepLiftShap, GradientShap
from pytorch_grad_cam import FullGrad
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import attnscope as ats
from attnscope.errors import NotApplicableError
from attnscope.explain import model_guard

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def smallcnn() -> nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(ats.models.get("smallcnn", widths=[8, 16, 16]))


def x_and_targets(n: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 3, 2][:n])


def zennit_relevance(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, composite) -> torch.Tensor:
    """zennit's own attributor, relevance started at R = y of the target (what attnscope starts from).

    y is the model's score as it is: under the composite, BatchNorm merged into the convolutions
    rounds the logits differently (1e-4 relative on a random net, whose logits are small sums).
    """
    with torch.no_grad():
        y = model(x)
    with Gradient(model=model, composite=composite) as attributor:
        start = torch.zeros_like(y)
        start[torch.arange(len(x)), targets] = y[torch.arange(len(x)), targets]
        _, relevance = attributor(x, start)
    return relevance.sum(dim=1)


def assert_max_diff(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    diff = float((ours - ref).detach().abs().max() / ref.detach().abs().max().clamp_min(1e-30))
    assert diff <= tol, f"max relative difference {diff:.2e} > {tol}"


# --- LRP ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1"])
def test_lrp_equals_zennit_called_directly_on_smallcnn(smallcnn: nn.Module, name: str) -> None:
    x, t = x_and_targets()
    canon = [SequentialMergeBatchNorm()]
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x), x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
    composite = {"epsilon-plus-flat": lambda: EpsilonPlusFlat(canonizers=canon),
                 "epsilon-gamma-box": lambda: EpsilonGammaBox(low=lo, high=hi, canonizers=canon),
                 "epsilon-alpha2-beta1": lambda: EpsilonAlpha2Beta1(canonizers=canon)}[name]()
    ref = zennit_relevance(smallcnn, x, t, composite)
    ours = ats.explain(smallcnn, x, "lrp", targets=t, options={"lrp": {"composite": name}})["lrp"].values
    assert_max_diff(ours, ref, 1e-6)


def test_lrp_epsilon_composite_equals_zennits_layer_map(smallcnn: nn.Module) -> None:
    """The fourth composite, LRP-ε on every convolution and linear layer, against zennit's own layer map."""
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Convolution, Linear

    x, t = x_and_targets()
    rules = layer_map_base(1e-6) + [(Convolution, Epsilon(epsilon=1e-6)), (Linear, Epsilon(epsilon=1e-6))]
    ref = zennit_relevance(smallcnn, x, t, LayerMapComposite(layer_map=rules, canonizers=[SequentialMergeBatchNorm()]))
    ours = ats.explain(smallcnn, x, "lrp", targets=t, options={"lrp": {"composite": "epsilon"}})["lrp"].values
    assert_max_diff(ours, ref, 1e-6)


def test_lrp_on_torchvision_resnet_uses_zennits_resnet_canonizer() -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(ats.models.get("resnet18", num_classes=10))
    x, t = x_and_targets(2, 64)
    ref = zennit_relevance(model, x, t, EpsilonPlusFlat(canonizers=[ResNetCanonizer()]))
    ours = ats.explain(model, x, "lrp", targets=t)["lrp"].values
    assert_max_diff(ours, ref, 1e-6)
    plain = ats.explain(model, x, "lrp", targets=t, options={"lrp": {"canonizer": "none"}})["lrp"].values
    assert (plain - ref).abs().max() > 1e-3 * ref.abs().max()  # the canonizer matters, so it was applied


def test_lrp_on_ltpa_equals_zennit() -> None:
    """LTPA's backbone (conv-BN-ReLU stages) with its attention estimators, whose products keep their gradient."""
    torch.manual_seed(0)
    model = randomise_batchnorm(ats.models.get("ltpa"))
    x, t = x_and_targets(2, 64)
    ref = zennit_relevance(model, x, t, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]))
    assert_max_diff(ats.explain(model, x, "lrp", targets=t)["lrp"].values, ref, 1e-6)


def test_lrp_through_a_convolution_that_pads_in_its_own_forward_equals_zennit() -> None:
    """timm's Conv2dSame (EfficientNet's "same" padding) pads in its forward before the convolution: its relevance
    must be evaluated through that forward (a plain conv's shortcut gave a 5x5 output for a 7x7 layer)."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU(), Conv2dSame(8, 8, 3, stride=2, bias=False),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x, t = x_and_targets(3, 13)
    ref = zennit_relevance(model, x, t, EpsilonPlusFlat())
    assert_max_diff(ats.explain(model, x, "lrp", targets=t)["lrp"].values, ref, 1e-6)


def test_lrp_epsilon_to_zero_is_input_times_gradient_on_a_bias_free_relu_net() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1,
                          bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4, bias=False))
    x, t = x_and_targets(3, 12)
    x = x.double()
    model = model.double()
    out = ats.explain(model, x, ["lrp", "inputxgrad"], targets=t,
                      options={"lrp": {"composite": "epsilon", "epsilon": 1e-12}})
    torch.testing.assert_close(out["lrp"].values, out["inputxgrad"].values, rtol=1e-7, atol=1e-10)
    # conservation: with no biases the relevance sums to the explained score
    scores = model(x).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(out["lrp"].values.sum(dim=(1, 2)), scores.detach(), rtol=1e-7, atol=1e-10)


def test_lrp_without_zennit_names_the_extra(smallcnn: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "zennit" or m.startswith("zennit.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(NotApplicableError, match=r"attnscope\[lrp\]"):
        ats.explain(smallcnn, x_and_targets()[0], "lrp")


# --- FullGrad ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["smallcnn", "resnet18"])
def test_fullgrad_equals_pytorch_grad_cam(model_name: str) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(ats.models.get(model_name, num_classes=10))
    x, t = x_and_targets(2, 64)
    ours = ats.explain(model, x, "fullgrad", targets=t)["fullgrad"].normalized()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with FullGrad(model=model, target_layers=[]) as cam:
            ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
    assert float((ours - ref).abs().max()) <= 1e-5


def test_fullgrad_of_a_model_without_biases_is_the_input_gradient_term() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    x, _ = x_and_targets(2, 8)
    out = ats.explain(model, x, ["fullgrad", "inputxgrad"], targets=0, options={"inputxgrad": {"reduce": "abs-sum"}})
    with torch.no_grad():
        model[0].bias.zero_()  # b = 0: the bias term is ψ(0) = 0, only the input term is left
    bias_free = ats.explain(model, x, ["fullgrad", "inputxgrad"], targets=0,
                            options={"inputxgrad": {"reduce": "abs-sum"}})
    grad = torch.autograd.functional.jacobian(lambda v: model(v)[:, 0].sum(), x)
    a = (x * grad).abs().flatten(2)
    a = (a - a.amin(2, keepdim=True)) / (1e-7 + (a - a.amin(2, keepdim=True)).amax(2, keepdim=True))
    torch.testing.assert_close(bias_free["fullgrad"].values, a.view_as(x).sum(1), rtol=1e-5, atol=1e-6)
    assert (out["fullgrad"].values - bias_free["fullgrad"].values).abs().max() > 1e-3  # the bias term counted


# --- DeepLIFT, DeepLIFT-SHAP, GradientSHAP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def relu_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    return randomise_batchnorm(model)


def captum_copy(model: nn.Module) -> nn.Module:
    """captum's DeepLift refuses in-place ReLUs; the same weights with out-of-place ones."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.ReLU) and m.inplace:
            m.inplace = False
    return twin


def test_deeplift_equals_captum_and_is_complete(relu_net: nn.Module) -> None:
    x, t = x_and_targets(3, 8)
    base = 0.3 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(5))
    ours = ats.explain(relu_net, x, "deeplift", targets=t, options={"deeplift": {"baseline": base}})["deeplift"]
    ref = DeepLift(captum_copy(relu_net)).attribute(x, base[None].expand_as(x), target=t).sum(dim=1)
    assert_max_diff(ours.values, ref, 1e-5)
    with torch.no_grad():
        delta = relu_net(x).gather(1, t[:, None])[:, 0] - relu_net(base[None].expand_as(x)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(ours.values.sum(dim=(1, 2)), delta, rtol=1e-4, atol=1e-6)  # summation-to-delta


def test_deepliftshap_equals_captum(relu_net: nn.Module) -> None:
    x, t = x_and_targets(3, 8)
    refs = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ours = ats.explain(relu_net, x, "deepliftshap", targets=t,
                       options={"deepliftshap": {"references": refs, "batch_size": 4}})["deepliftshap"].values
    ref = DeepLiftShap(captum_copy(relu_net)).attribute(x, refs, target=t).sum(dim=1)
    assert_max_diff(ours, ref, 1e-5)


def test_deepliftshap_per_image_references_in_groups_equal_captum_per_image(relu_net: nn.Module) -> None:
    """"uniform" references are drawn per image; under a budget of one input per forward each image's references
    are recorded alone (one forward each, then let go) and the map is captum's DeepLiftShap on that image's own
    references, for both targets of each image; the default budget (every image's at once) gives the same."""
    from attnscope.explain import budget
    from attnscope.explain.reference import reference_set

    x, _ = x_and_targets(3, 8)
    targets = torch.tensor([[0, 2], [1, 3], [3, 0]])
    options = {"deepliftshap": {"n_references": 4, "seed": 2}}
    seen: list[int] = []
    handle = relu_net[0].register_forward_pre_hook(
        lambda _m, i: seen.append(i[0].shape[0]) if type(i[0]) is torch.Tensor and not i[0].requires_grad else None)
    try:
        with budget.memory_budget(1):  # one input per forward: one image's references per group
            grouped = ats.explain(relu_net, x, "deepliftshap", targets=targets, options=options)["deepliftshap"]
    finally:
        handle.remove()
    assert sum(seen) - 3 == 3 * 4  # after the shared pass (3 images), each image's 4 references once
    whole = ats.explain(relu_net, x, "deepliftshap", targets=targets, options=options)["deepliftshap"].values
    assert_max_diff(grouped.values, whole, 1e-6)
    refs = reference_set("uniform", x, 4, 2)  # (3, 4, C, H, W)
    for i in range(3):
        for k in range(2):
            ref = DeepLiftShap(captum_copy(relu_net)).attribute(x[i : i + 1], refs[i], target=int(targets[i, k]))
            assert_max_diff(grouped.values[i, k][None], ref.sum(dim=1), 1e-5)


def test_gradientshap_equals_captum_on_captums_own_draws(relu_net: nn.Module, monkeypatch) -> None:
    """captum draws the references (np.random.choice), α (np.random.uniform) and noise (torch.normal); we
    record its draws and give them to our estimator: the two agree on the same samples."""
    from attnscope.explain.context import Oracle
    from attnscope.explain.reference import gradient_shap_sample, sample_mean
    from attnscope.explain.targets import resolve

    x, t = x_and_targets(3, 8)
    refs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    n, stdev = 6, 0.1
    drawn: dict[str, object] = {}
    choice, uniform, normal = np.random.choice, np.random.uniform, torch.normal
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: drawn.setdefault("index", choice(*a, **k)))
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: drawn.setdefault("alpha", uniform(*a, **k)))
    monkeypatch.setattr(torch, "normal", lambda *a, **k: drawn.setdefault("noise", normal(*a, **k)))
    np.random.seed(0)
    ref = GradientShap(captum_copy(relu_net)).attribute(x, refs, n_samples=n, stdevs=stdev, target=t).sum(dim=1)
    monkeypatch.undo()

    index = torch.as_tensor(np.asarray(drawn["index"])).view(3, n)
    alpha = torch.as_tensor(np.asarray(drawn["alpha"]), dtype=x.dtype).view(3, n)
    noise = drawn["noise"].view(3, n, *x.shape[1:])
    target, _, _ = resolve(t, relu_net(x))
    with model_guard(relu_net):
        oracle = Oracle(relu_net, x, target, 1, None, None, None, None)
        sample = gradient_shap_sample(x, refs[None].expand(3, *refs.shape), index, alpha, noise)
        ours = sample_mean(oracle, 3, n, sample, 5, x).sum(dim=1)
    assert_max_diff(ours, ref, 1e-5)


def test_gradientshap_with_one_reference_and_no_noise_is_stochastic_integrated_gradients(relu_net: nn.Module) -> None:
    x, t = x_and_targets(2, 8)
    out = ats.explain(relu_net, x, ["gradientshap", "ig"], targets=t,
                      options={"gradientshap": {"references": 0.0, "n": 400}, "ig": {"steps": 64}})
    with torch.no_grad():
        delta = relu_net(x).gather(1, t[:, None])[:, 0] - relu_net(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(out["ig"].values.sum(dim=(1, 2)), delta, rtol=1e-2, atol=1e-4)
    # α ~ U(0, 1) is a Monte-Carlo estimate of the IG integral: within its sampling error of IG's sum
    assert float((out["gradientshap"].values.sum(dim=(1, 2)) - delta).abs().max()) < 0.1 * float(delta.abs().max())
