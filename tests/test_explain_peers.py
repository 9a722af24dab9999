"""Agreement with captum, pytorch-grad-cam and torchcam on torchvision resnet18 (fixed random weights).

Each peer is compared under its own variant of a method's definition (see docs/methods.md).
Normalised maps agree within 1e-4; raw maps within 1e-4 of their largest value.
"""

import copy
import warnings

import pytest
import torch
from captum.attr import (
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchcam.methods import ScoreCAM as TorchcamScoreCAM

import attnscope as ats
from attnscope.explain import engine
from attnscope.maps import normalize, upsample

TOL = 1e-4



@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """resnet18 with random weights and random BatchNorm statistics (so it has biases)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ats.models.get("resnet18", num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.2, 0.2, generator=g)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def small() -> torch.Tensor:
    """Two 32 px images for the methods that run many passes per image (IG, occlusion)."""
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def tiny() -> torch.Tensor:
    """One 32 px image for the methods that run one pass per channel, read at layer3 (256 × 2 × 2)."""
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


TARGETS = torch.tensor([3, 7])


def ours(model, x, method, targets=TARGETS, layer="layer4", **options) -> ats.AttentionMap:
    return ats.explain(model, x, method, targets=targets, layer=layer, options={method: options} if options else None)[
        method
    ]


def assert_raw_close(a: torch.Tensor, b: torch.Tensor) -> None:
    b = b.detach()
    assert (a - b).abs().max() <= TOL * b.abs().max(), float((a - b).abs().max() / b.abs().max())


def assert_normalized_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max() <= TOL, float((a - b).abs().max())


def grad_cam_lib(cls, model, x, targets=TARGETS, layer="layer4") -> torch.Tensor:
    with warnings.catch_warnings(), cls(model=model, target_layers=[getattr(model, layer)]) as cam:
        warnings.simplefilter("ignore")
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))


# --- captum -------------------------------------------------------------------------------------


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_vs_captum(resnet, images, relu) -> None:
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(images, target=TARGETS, relu_attributions=relu)
    mine = ours(resnet, images, "gradcam", relu=relu)
    assert_raw_close(mine.lowres, theirs[:, 0])
    assert_raw_close(mine.values, upsample(theirs[:, 0].detach(), (96, 96)))


@pytest.mark.parametrize(
    "rule, captum_rule",
    [
        ("gauss-legendre", "gausslegendre"),
        ("riemann-right", "riemann_right"),
        ("riemann-middle", "riemann_middle"),
        ("riemann-left", "riemann_left"),
    ],
)
def test_integrated_gradients_vs_captum(resnet, small, rule, captum_rule) -> None:
    theirs = IntegratedGradients(resnet).attribute(small, target=TARGETS, n_steps=8, method=captum_rule)
    mine = ours(resnet, small, "ig", steps=8, rule=rule, batch_size=12)
    assert_raw_close(mine.values, theirs.sum(dim=1))


def test_integrated_gradients_trapezoid_differs_from_captum_by_its_step_sum(resnet, small) -> None:
    # captum's trapezoid rule uses steps 1/n at n points from 0 to 1 (weights sum to (n-1)/n); ours uses
    # 1/(n-1) (weights sum to 1, the trapezoid rule). The maps differ exactly by that factor.
    n = 8
    theirs = IntegratedGradients(resnet).attribute(small, target=TARGETS, n_steps=n, method="riemann_trapezoid")
    mine = ours(resnet, small, "ig", steps=n, rule="riemann-trapezoid")
    # (1e-3: captum's α come from a float32 linspace, one ulp off k/(n-1) at some steps)
    scale = theirs.abs().max()
    assert (mine.values * (n - 1) / n - theirs.sum(dim=1)).abs().max() <= 1e-3 * scale
    assert (mine.values - theirs.sum(dim=1)).abs().max() > 1e-2 * scale


def test_saliency_and_input_x_gradient_vs_captum(resnet, images) -> None:
    maps = ats.explain(resnet, images, ("saliency", "inputxgrad"), targets=TARGETS)
    assert_raw_close(maps["saliency"].values, Saliency(resnet).attribute(images, target=TARGETS).amax(dim=1))
    assert_raw_close(maps["inputxgrad"].values, InputXGradient(resnet).attribute(images, target=TARGETS).sum(dim=1))


def test_guided_backprop_vs_captum(resnet, images) -> None:
    theirs = GuidedBackprop(resnet).attribute(images, target=TARGETS)  # (B, C, H, W)
    with engine.model_guard(resnet):
        cap, _ = engine.capture(resnet, images, TARGETS, frozenset({"guided_grad"}))
    assert_raw_close(cap.guided_grad, theirs)
    for reduce, fn in (("sum", lambda t: t.sum(1)), ("abs-max", lambda t: t.abs().amax(1))):
        assert_raw_close(ours(resnet, images, "guided-backprop", reduce=reduce).values, fn(theirs))


def test_guided_gradcam_vs_captum(resnet, images) -> None:
    # captum upsamples Grad-CAM with "nearest" by default; the paper (and we) use bilinear
    theirs = GuidedGradCam(resnet, resnet.layer4).attribute(images, target=TARGETS, interpolate_mode="bilinear")
    for reduce, fn in (("sum", lambda t: t.sum(1)), ("abs-max", lambda t: t.abs().amax(1))):
        assert_raw_close(ours(resnet, images, "guided-gradcam", reduce=reduce).values, fn(theirs))


def test_occlusion_vs_captum(resnet, small) -> None:
    # 32 = 8 + 3 · 8: the windows tile the image, so captum's windows are ours
    theirs = Occlusion(resnet).attribute(
        small, target=TARGETS, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0.5
    )
    assert_raw_close(ours(resnet, small, "occlusion", window=8, stride=8, baseline=0.5).values, theirs[:, 0])


# --- pytorch-grad-cam (ReLU'd, min-max normalised maps) --------------------------------------------


@pytest.mark.parametrize(
    "method, cls",
    [("gradcam", GradCAM), ("xgradcam", XGradCAM), ("hirescam", HiResCAM), ("layercam", LayerCAM)],
)
def test_gradient_cams_vs_pytorch_grad_cam(resnet, images, method, cls) -> None:
    assert_normalized_close(ours(resnet, images, method).normalized(), grad_cam_lib(cls, resnet, images))


def test_gradcam_plus_plus_vs_pytorch_grad_cam(resnet, images) -> None:
    theirs = grad_cam_lib(GradCAMPlusPlus, resnet, images)
    # pytorch-grad-cam adds 1e-6 to α's denominator, which is of the order of g² here
    assert_normalized_close(ours(resnet, images, "gradcam++", eps=1e-6).normalized(), theirs)
    assert (ours(resnet, images, "gradcam++").normalized() - theirs).abs().max() > 10 * TOL


def test_eigencam_vs_pytorch_grad_cam(resnet, images) -> None:
    # pytorch-grad-cam centres the activations and leaves the sign of the component to LAPACK
    theirs = grad_cam_lib(EigenCAM, resnet, images)
    raw = ours(resnet, images, "eigencam", center=True)
    for i in range(len(images)):
        candidates = [normalize(upsample((s * raw.lowres[i : i + 1]).clamp_min(0), (96, 96))) for s in (1, -1)]
        assert min(float((c - theirs[i]).abs().max()) for c in candidates) <= TOL


def test_scorecam_vs_pytorch_grad_cam(resnet, tiny) -> None:
    x, t = tiny, TARGETS[:1]
    theirs = grad_cam_lib(ScoreCAM, resnet, x, t, layer="layer3")
    mine = ours(resnet, x, "scorecam", t, "layer3", weights="channel-softmax", align_corners=True)
    assert_normalized_close(mine.normalized(), theirs)


def test_scorecam_vs_torchcam(resnet, tiny) -> None:
    x, t = tiny, TARGETS[:1]
    with TorchcamScoreCAM(resnet, "layer3", batch_size=64, input_shape=(3, 32, 32)) as extractor:
        with torch.no_grad():
            resnet(x)
        theirs = extractor(class_idx=t.tolist())[0]  # (B, h, w), normalised
    mine = ours(resnet, x, "scorecam", t, "layer3", weights="channel-softmax", upsample_first=False)
    assert_normalized_close(normalize(mine.lowres), theirs)


def test_ablationcam_vs_pytorch_grad_cam(resnet, tiny) -> None:
    x, t = tiny, TARGETS[:1]
    theirs = grad_cam_lib(AblationCAM, resnet, x, t, layer="layer3")
    assert_normalized_close(ours(resnet, x, "ablationcam", t, "layer3").normalized(), theirs)


def test_guided_backprop_with_non_inplace_relus_is_the_same(resnet, images) -> None:
    plain = copy.deepcopy(resnet)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    a = ours(resnet, images, "guided-backprop").values
    torch.testing.assert_close(ours(plain, images, "guided-backprop").values, a, rtol=0, atol=0)
