"""The layout of explain's passes. The shared pass of a torchvision or timm classifier runs NHWC
(`modules.nhwc_pass`) and gives the NCHW maps. IG's and SmoothGrad's reruns in NHWC layout (`channels_last`,
"auto" for a model that declares `prefers_channels_last`) really run NHWC, also for one channel, and give the maps
of the NCHW passes; IG's point α = 0 with one baseline for all images is differentiated once per class, and gives
the maps of once per row."""

import pytest
import torch
from torch import nn

import attnscope as ats


class Strides(nn.Module):
    """Records whether each (N, C > 1, H, W) input it sees has NHWC strides (channel stride 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.nhwc: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.nhwc.append(x.stride(1) == 1)
        return x


def _net(prefers: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), Strides(), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 3))
    net[2].running_mean.uniform_(-0.5, 0.5)
    net[2].running_var.uniform_(0.5, 2.0)
    net.prefers_channels_last = prefers
    return net.eval()


@pytest.mark.parametrize("name,opts", [("ig", {"steps": 8, "rule": "riemann-trapezoid", "batch_size": 5}),
                                       ("smoothgrad", {"n": 6, "batch_size": 4})])
def test_nhwc_reruns_run_nhwc_and_give_the_nchw_maps(name: str, opts: dict) -> None:
    net, x, y = _net(prefers=True), torch.rand(4, 1, 12, 12), torch.tensor([0, 2, 1, 2])
    plain = ats.explain(net, x, name, y, options={name: {**opts, "channels_last": False}})[name].values
    seen = net[1].nhwc
    assert seen and not any(seen)  # the conv's output: NCHW strides with the model's own layout
    seen.clear()
    auto = ats.explain(net, x, name, y, options={name: opts})[name].values  # "auto": the model prefers NHWC
    assert sum(seen) == len(seen) - 1  # every rerun NHWC; only the shared pass on the images keeps their layout
    torch.testing.assert_close(auto, plain, rtol=1e-5, atol=1e-6 * float(plain.abs().max()))


@pytest.mark.parametrize("name", ["ig", "smoothgrad"])
def test_auto_keeps_the_models_layout_where_it_declares_no_preference(name: str) -> None:
    net, x = _net(prefers=False), torch.rand(3, 1, 12, 12)
    plain = ats.explain(net, x, name, 1, options={name: {"channels_last": False}})[name].values
    auto = ats.explain(net, x, name, 1)[name].values
    assert torch.equal(auto, plain) and not any(net[1].nhwc)


def test_igs_baseline_point_once_per_class_gives_the_maps_of_once_per_row() -> None:
    net, x, y = _net(prefers=False), torch.rand(6, 1, 12, 12), torch.tensor([0, 2, 2, 1, 0, 2])
    differentiated: list[int] = []
    net.register_forward_hook(lambda m, i, o: differentiated.append(len(i[0])) if o.requires_grad else None)
    for rule, steps in (("riemann-trapezoid", 5), ("riemann-left", 4)):
        differentiated.clear()
        shared = ats.explain(net, x, "ig", y, options={"ig": {"steps": steps, "rule": rule}})["ig"].values
        assert sum(differentiated) == 6 * (steps - 1) + 3  # 3 classes: 3 baseline points, not 6
        per_row = torch.zeros_like(x)  # the same baseline given per image (B, C, H, W): no sharing
        full = ats.explain(net, x, "ig", y, options={"ig": {"steps": steps, "rule": rule, "baseline": per_row}})
        torch.testing.assert_close(shared, full["ig"].values, rtol=1e-6, atol=1e-7)
    differentiated.clear()
    ats.explain(net, x, "ig", lambda out: out[:, 0], options={"ig": {"steps": 5, "rule": "riemann-left"}})
    assert sum(differentiated) == 6 * 5  # a callable target: every row's own point


def _layouts(model: nn.Module, batch: int) -> list[bool]:
    """Whether each input of `batch` images into the model's first convolution has NHWC strides."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen: list[bool] = []
    first.register_forward_pre_hook(
        lambda _m, i: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)) if len(i[0]) == batch
        else None)
    return seen


def test_the_shared_pass_of_a_torchvision_classifier_runs_nhwc_and_gives_the_nchw_maps(monkeypatch) -> None:
    """resnet18's Grad-CAM, saliency and Guided Backprop from one NHWC pass equal the NCHW pass's to float rounding
    (`modules.nhwc_pass`); the maps come back in the usual layout; the model is left as found."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model, x = resnet18(num_classes=5).eval(), torch.rand(49, 3, 64, 64)  # 49 · 64² = NHWC_MIN_PIXELS
    y = torch.arange(49) % 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = _layouts(model, 49)
    methods = ("gradcam", "saliency", "guided-backprop")
    maps = ats.explain(model, x, methods, targets=y)
    assert seen == [True]  # one shared pass, NHWC
    monkeypatch.setattr("attnscope.explain.engine.nhwc_pass", lambda *_: False)  # the pass in the images' layout
    plain = ats.explain(model, x, methods, targets=y)
    assert seen == [True, False]
    for name in methods:
        a, b = maps[name].values, plain[name].values
        assert a.is_contiguous() and b.abs().max() > 0
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), name
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert maps["gradcam"].values.shape == (49, 64, 64)


def test_nhwc_pass_takes_classifiers_of_torchvision_and_timm_only() -> None:
    from torchvision.models import resnet18
    from torchvision.models.segmentation import fcn_resnet50

    from attnscope.modules import nhwc_pass

    x = torch.rand(4, 3, 224, 224)
    assert nhwc_pass(resnet18(), x)
    assert not nhwc_pass(resnet18(), x[:3])  # under 4 images of 224 px: the weights' reorder is not amortised
    assert nhwc_pass(resnet18(), torch.rand(1, 3, 448, 448))  # the same pixels in one image
    assert not nhwc_pass(resnet18(), x[:, :1])  # one channel: NCHW and NHWC are one block
    assert not nhwc_pass(resnet18(), x[0])  # not a batch of images
    assert not nhwc_pass(fcn_resnet50(weights=None, weights_backbone=None, num_classes=2), x)  # segmentation
    assert not nhwc_pass(_net(prefers=True), x)  # a model's own preference is for its reruns (Oracle)
    assert not nhwc_pass(ats.models.get("smallcnn"), x)
