"""Maps under bf16 autocast on the CPU against float32 (the table of docs/autocast.md): every method runs,
the maps come back float32, and they agree with float32 to within bf16's rounding as measured per family."""

import pytest
import torch

import attnscope as ats

FAST = {"ig": {"steps": 8}, "smoothgrad": {"n": 4}, "rise": {"n": 64}, "extremal": {"steps": 5}, "sscam": {"n": 2},
        "iscam": {"n": 2}, "gradientshap": {"n": 4}, "deepliftshap": {"n_references": 2},
        "occlusion": {"window": 8, "stride": 8}}
# method → bound on max |bf16 − fp32| / max |fp32| ("max") or on 1 − the centred cosine similarity ("cos")
CNN = {"cam": ("max", 0.02), "gradcam": ("max", 0.02), "gradcam++": ("max", 0.02), "layercam": ("max", 0.02),
       "eigencam": ("max", 0.02), "scorecam": ("max", 0.02), "sscam": ("max", 0.02), "rise": ("max", 0.02),
       "occlusion": ("cos", 0.05), "ablationcam": ("cos", 0.05), "saliency": ("cos", 0.02), "ig": ("cos", 0.02),
       "smoothgrad": ("cos", 0.02), "inputxgrad": ("cos", 0.02), "guided-backprop": ("cos", 0.02),
       "deeplift": ("cos", 0.02), "fullgrad": ("cos", 0.02), "lrp": ("cos", 0.02), "xgradcam": ("max", 0.02),
       "hirescam": ("max", 0.02), "eigengradcam": ("max", 0.02), "kpcacam": ("max", 0.02), "finercam": ("max", 0.02),
       "smoothgradcam++": ("max", 0.02), "iscam": ("max", 0.02), "extremal": ("max", 0.02),
       "guided-gradcam": ("cos", 0.02), "deepliftshap": ("cos", 0.02), "gradientshap": ("cos", 0.02)}
VIT = {"attention": ("max", 0.02), "rollout": ("max", 0.02), "grad-rollout": ("max", 0.03),
       "flow": ("max", 0.02), "chefer": ("max", 0.08), "legrad": ("max", 0.03)}


def _centred_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(1), b.flatten(1)
    return float(torch.nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)).min())


def _check(model, x, name, how, bound) -> None:
    opts = {name: FAST[name]} if name in FAST else None
    ref = ats.explain(model, x, name, targets=1, options=opts)[name].values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ats.explain(model, x, name, targets=1, options=opts)[name].values
    assert got.dtype == torch.float32
    if how == "max":
        assert float((got - ref).abs().max() / ref.abs().max()) < bound
    else:
        assert 1 - _centred_cos(got, ref) < bound
    assert not torch.equal(got, ref)  # autocast did run the model in bf16


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[8, 16]).eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return ats.models.get("vit", image_size=32, patch_size=8, dim=32, depth=2, num_classes=5).eval()


@pytest.mark.parametrize("name", sorted(CNN))
def test_cnn_maps_under_bf16_autocast(cnn, name) -> None:
    _check(cnn, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), name, *CNN[name])


@pytest.mark.parametrize("name", sorted(VIT))
def test_vit_maps_under_bf16_autocast(vit, name) -> None:
    _check(vit, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), name, *VIT[name])
