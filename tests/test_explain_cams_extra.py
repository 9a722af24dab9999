"""Eigen-Grad-CAM, KPCA-CAM, Finer-CAM, Smooth Grad-CAM++, SS-CAM, IS-CAM and eigen-smooth, against
pytorch-grad-cam and torchcam called directly on the same SmallCNN (each under its own variant)."""

import warnings

import pytest
import torch
import torchcam.methods as tc
from pytorch_grad_cam import KPCA_CAM, EigenGradCAM, FinerCAM, GradCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import attnscope as ats
from attnscope.maps import normalize

LAYER = "features.1"


@pytest.fixture(scope="module")
def model() -> nn.Module:
    from test_explain_attributions import randomise_batchnorm

    torch.manual_seed(0)
    return randomise_batchnorm(ats.models.get("smallcnn", widths=[8, 16, 16]))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 3])


def pgc(cls, model: nn.Module, x: torch.Tensor, targets, **call) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model, [model.get_submodule(LAYER)]) as cam:
            return torch.as_tensor(cam(x, targets, **call))


def per_image_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).amax(dim=1)


def test_eigengradcam_equals_pytorch_grad_cam_up_to_the_svd_sign(model, data) -> None:
    x, t = data
    ours = ats.explain(model, x, "eigengradcam", targets=t, layer=LAYER)["eigengradcam"]
    flipped = ats.explain(model, x, "eigengradcam", targets=t, layer=LAYER,
                          options={"eigengradcam": {"relu": False}})["eigengradcam"]
    ref = pgc(EigenGradCAM, model, x, [ClassifierOutputTarget(int(c)) for c in t])
    from attnscope.maps import upsample

    negated = normalize(upsample((-flipped.lowres).clamp_min(0), (32, 32)))
    best = torch.minimum(per_image_diff(ours.normalized(), ref), per_image_diff(negated, ref))
    assert float(best.max()) <= 1e-4


def test_kpcacam_equals_pytorch_grad_cam(model, data) -> None:
    x, t = data
    ours = ats.explain(model, x, "kpcacam", targets=t, layer=LAYER)["kpcacam"].normalized()
    ref = pgc(KPCA_CAM, model, x, [ClassifierOutputTarget(int(c)) for c in t])
    assert float(per_image_diff(ours, ref).max()) <= 1e-4


def test_kpcacam_with_the_linear_kernel_is_eigencam_on_centred_activations(model, data) -> None:
    x, t = data
    out = ats.explain(model, x, ["kpcacam", "eigencam"], targets=t, layer=LAYER,
                      options={"kpcacam": {"kernel": "linear", "relu": False},
                               "eigencam": {"center": True}})
    a, b = out["kpcacam"].lowres, out["eigencam"].lowres
    same = torch.minimum(per_image_diff(a, b), per_image_diff(a, -b))  # √λ u = X v: the same up to sign
    assert float(same.max()) <= 1e-4 * float(b.abs().max())


def test_finercam_equals_pytorch_grad_cam_for_the_predicted_class(model, data) -> None:
    x, _ = data
    ours = ats.explain(model, x, "finercam", layer=LAYER)["finercam"].normalized()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with FinerCAM(model, [model.get_submodule(LAYER)]) as cam:
            ref = torch.as_tensor(cam(x, None))
    assert float(per_image_diff(ours, ref).max()) <= 1e-4


def test_finercam_with_alpha_zero_weighs_only_the_target_score(model, data) -> None:
    """α = 0: the score is y_c times Σ p_j / (Σ p_j + 1e-9), so its gradient is Grad-CAM's up to a positive factor."""
    x, t = data
    out = ats.explain(model, x, ["finercam", "gradcam"], targets=t, layer=LAYER,
                      options={"finercam": {"alpha": 0.0}})
    assert float(per_image_diff(out["finercam"].normalized(), out["gradcam"].normalized()).max()) <= 1e-3


def test_smoothgradcampp_equals_torchcam_where_its_alpha_is_the_papers(model, data) -> None:
    """torchcam sums g³·A over positions where the paper has Σ A · g³: equal when ∂y/∂A is constant per
    channel (the last layer before global average pooling); its noise cannot be drawn alike, so σ → 0."""
    x, t = data
    ours = ats.explain(model, x, "smoothgradcam++", targets=t, layer="features",
                       options={"smoothgradcam++": {"n": 2, "sigma": 0.0}})["smoothgradcam++"].lowres
    with tc.SmoothGradCAMpp(model, "features", num_samples=2, std=1e-9, input_shape=(3, 32, 32)) as ext:
        ref = ext(class_idx=t.tolist(), scores=model(x))[0]
    assert float((normalize(ours) - normalize(ref.detach())).abs().max()) <= 1e-4
    pp = ats.explain(model, x, "gradcam++", targets=t, layer="features", options={"gradcam++": {"eps": 1e-8}})
    torch.testing.assert_close(normalize(ours), normalize(pp["gradcam++"].lowres), atol=1e-4, rtol=0)


def test_iscam_and_sscam_equal_torchcam(model, data) -> None:
    x, t = data
    out = ats.explain(model, x, ["iscam", "sscam"], targets=t, layer=LAYER,
                      options={"iscam": {"n": 3, "upsample_first": False, "batch_size": 5},
                               "sscam": {"n": 2, "sigma": 0.0, "upsample_first": False}})
    with torch.no_grad():
        with tc.ISCAM(model, LAYER, num_samples=3, input_shape=(3, 32, 32)) as ext:
            model(x)
            ref_is = ext(class_idx=t.tolist())[0]
        with tc.SSCAM(model, LAYER, num_samples=2, std=1e-9, input_shape=(3, 32, 32)) as ext:
            model(x)
            ref_ss = ext(class_idx=t.tolist())[0]
        with tc.ScoreCAM(model, LAYER, input_shape=(3, 32, 32)) as ext:
            model(x)
            ref_score = ext(class_idx=t.tolist())[0]
    assert float((normalize(out["iscam"].lowres) - normalize(ref_is)).abs().max()) <= 1e-4
    assert float((normalize(out["sscam"].lowres) - normalize(ref_ss)).abs().max()) <= 1e-4
    # SS-CAM without noise is Score-CAM with channel-softmax weights
    assert float((normalize(out["sscam"].lowres) - normalize(ref_score)).abs().max()) <= 1e-4


def test_iscam_makes_only_each_chunks_masks(model, data, monkeypatch) -> None:
    """The masks at input size are made per chunk of masked inputs, never an image's C of them at once (98 MiB for
    resnet18 at 224 px); the values are torchcam's (the test above)."""
    from attnscope.explain import scorecam_smooth

    x, t = data
    sizes: list[int] = []
    made = scorecam_smooth.channel_masks
    monkeypatch.setattr(scorecam_smooth, "channel_masks", lambda a, *rest: sizes.append(a.shape[1]) or made(a, *rest))
    ats.explain(model, x, "iscam", targets=t, layer=LAYER, options={"iscam": {"n": 3, "batch_size": 5}})
    assert max(sizes) == 5 and sum(sizes) == 2 * 16 * 3  # 2 images × 16 channels × n = 3 masked inputs


@pytest.mark.parametrize(("ours", "theirs"), [("gradcam", GradCAM), ("layercam", LayerCAM)])
def test_eigen_smooth_equals_pytorch_grad_cam_up_to_the_svd_sign(model, data, ours, theirs) -> None:
    x, t = data
    targets = [ClassifierOutputTarget(int(c)) for c in t]
    ref = pgc(theirs, model, x, targets, eigen_smooth=True)
    got = ats.explain(model, x, ours, targets=t, layer=LAYER, options={ours: {"eigen_smooth": True, "relu": False}})
    from attnscope.maps import upsample

    both = [normalize(upsample((s * got[ours].lowres).clamp_min(0), (32, 32))) for s in (1, -1)]
    best = torch.minimum(per_image_diff(both[0], ref), per_image_diff(both[1], ref))
    assert float(best.max()) <= 1e-4
