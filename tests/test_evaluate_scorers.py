"""The scorers of the perturbation metrics: their numbers by hand, and the NHWC path (`channels_last`)
equal to the model's own layout while the model is left exactly as it was."""

import pytest
import torch
from torch import nn

from attnscope import evaluate, metrics
from attnscope.errors import InputError
from attnscope.evaluate.scorers import as_nhwc, nhwc


def _net(prefers: bool | None = None) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    if prefers is not None:
        net.prefers_channels_last = prefers
    return net.eval()


def test_scorers_by_hand() -> None:
    net, x, c = _net(), torch.rand(4, 1, 8, 8), torch.tensor([0, 2, 1, 2])
    logits = net(x).detach()
    source = torch.tensor([3, 0, 1, 2])  # input i scored for the class of image source[i]
    expect = logits.softmax(1)[torch.arange(4), c[source]]
    assert torch.allclose(evaluate.class_probability(net, c)(x, source), expect, atol=1e-6)
    assert torch.allclose(evaluate.class_logit(net, c)(x, source), logits[torch.arange(4), c[source]], atol=1e-6)
    right = (logits.argmax(1) == c[source]).double()
    assert torch.equal(evaluate.correct_class(net, c)(x, source), right)


def test_nhwc_scores_equal_the_models_layout_and_leave_the_model_as_it_was() -> None:
    net, x, c = _net(), torch.rand(16, 1, 12, 12), torch.randint(0, 3, (16,))
    before = {k: (v, v.stride(), v.clone()) for k, v in net.state_dict(keep_vars=True).items()}
    source = torch.arange(16)
    for scorer in (evaluate.class_probability, evaluate.class_logit):
        a = scorer(net, c, channels_last=False)(x, source)
        b = scorer(net, c, channels_last=True)(x, source)
        assert torch.allclose(a, b, atol=1e-6)
    amap = torch.rand(16, 12, 12)
    prob = evaluate.class_probability
    curves = [metrics.pixel_flipping(amap, x, prob(net, c, channels_last=cl), "zero", 16) for cl in (False, True)]
    assert torch.allclose(curves[0], curves[1], atol=1e-6)
    for k, v in net.state_dict(keep_vars=True).items():  # the same tensors, strides and values
        assert v is before[k][0] and v.stride() == before[k][1] and torch.equal(v, before[k][2])


def test_auto_follows_the_models_declared_layout() -> None:
    assert nhwc(_net(prefers=True)) and not nhwc(_net(prefers=False)) and not nhwc(_net())
    assert nhwc(_net(), True) and not nhwc(_net(prefers=True), False)
    with pytest.raises(InputError, match="channels_last"):
        nhwc(_net(), "yes")


def test_one_channel_tensors_get_nhwc_strides() -> None:
    """(B, 1, H, W) is already 'contiguous' in both layouts, so .contiguous() keeps NCHW strides; as_nhwc does not."""
    w = torch.rand(16, 1, 3, 3)
    assert w.contiguous(memory_format=torch.channels_last).stride() == (9, 9, 3, 1)
    assert as_nhwc(w).stride() == (9, 1, 3, 1) and torch.equal(as_nhwc(w), w)
    assert as_nhwc(torch.rand(5)).stride() == (1,)
