"""Sanity checks on models with in-place activations (issue 27, item 5): the default `reuse=True` replays the
unchanged prefix of the network; on `nn.ReLU(inplace=True)` it raised "a leaf Variable that requires grad is
being used in an in-place operation". Every registered method on an in-place-ReLU CNN, and torchvision
resnet18, densenet121, efficientnet_b0 and vit_b_16 with default settings, give what `reuse=False` gives."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from attnscope.explain import Explainer
from attnscope.registry import METHODS
from attnscope.sanity import Comparison, Randomisation, model_randomization
from test_explain_invariants import CHECKED, FAST, _net

CNN_METHODS = [name for name, index in CHECKED.items() if index == 0]  # those the invariants check on the CNN


def _assert_same(a, b) -> None:
    assert a.steps == b.steps
    for method in a.scores:
        for step in a.steps:
            for metric, values in a.scores[method][step].items():
                torch.testing.assert_close(values, b.scores[method][step][metric], equal_nan=True, rtol=1e-5,
                                           atol=1e-5, msg=lambda m, s=step, me=method: f"{me} {s}: {m}")
    for key, maps in a.maps.items():
        for method, values in maps.items():
            torch.testing.assert_close(values, b.maps[key][method], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", CNN_METHODS)
def test_every_method_on_an_in_place_relu_cnn_gives_with_reuse_what_it_gives_without(method):
    assert any(isinstance(m, torch.nn.ReLU) and m.inplace for m in _net().modules())
    torch.manual_seed(0)
    model, x = _net().eval(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    how = Explainer((method,), options={method: FAST[method]} if method in FAST else None)
    compare = Comparison(("spearman_abs",), calibration=(), keep=1)
    plain = model_randomization(model, x, how, randomisation=Randomisation(blocks=2, reuse=False), comparison=compare)
    again = model_randomization(model, x, how, randomisation=Randomisation(blocks=2, reuse=True), comparison=compare)
    assert again.meta["reused"]["hits"] + again.meta["reused"]["misses"] > 0
    _assert_same(again, plain)


def test_the_methods_checked_on_the_in_place_relu_cnn_are_most_of_the_registry():
    assert len(CNN_METHODS) > 0.6 * len(METHODS.names())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "densenet121", "efficientnet_b0", "vit_b_16"])
def test_torchvision_models_are_sanity_checked_by_default_as_without_reuse(name):
    torch.manual_seed(0)
    extra = {"image_size": 32} if name.startswith("vit") else {}
    model = getattr(torchvision.models, name)(num_classes=10, **extra).eval()  # random weights: nothing downloaded
    assert name == "vit_b_16" or any(isinstance(m, torch.nn.ReLU) and m.inplace for m in model.modules()) \
        or name == "efficientnet_b0"  # SiLU(inplace=True) there
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = model_randomization(model, x)  # reuse=True, gradcam and saliency, every layer
        plain = model_randomization(model, x, randomisation=Randomisation(reuse=False))
    assert default.meta["reused"]["hits"] > 0
    _assert_same(default, plain)
