"""layer="auto" and layouts on torchvision and timm families: the chosen block, and Grad-CAM there from the formula.

Each family is built small with random weights. The reference hooks the expected module itself,
reads its output in the layout written here (channels-first, channels-last, or ViT tokens after
the prefix tokens), and computes Grad-CAM = ReLU(Σ_k mean_ij(∂y/∂A_k) · A_k) (Selvaraju et al. 2017).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import InputError
from attnscope.explain import Layer

timm = pytest.importorskip("timm")  # the dev extra
tv = pytest.importorskip("torchvision")


def _tv_swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer([4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=5)


def _tv_maxvit() -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit((64, 64), 8, 2, [8, 16], [1, 1], 4, 0.0, num_classes=5)


def _tv_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=5)
    nn.init.normal_(model.heads.head.weight)  # torchvision initialises the head to zero: every gradient would be 0
    return model


def _timm(name: str, **cfg) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=5, **cfg)


# family: (builder, image size, expected layer, layout, prefix tokens)
FAMILIES = {
    "tv-resnet": (lambda: tv.models.resnet18(num_classes=5), 64, "layer4", "nchw", 0),
    "tv-regnet": (lambda: tv.models.regnet_x_400mf(num_classes=5), 64, "trunk_output", "nchw", 0),
    "tv-vgg": (lambda: tv.models.vgg11_bn(num_classes=5), 64, "features", "nchw", 0),
    "tv-densenet": (lambda: tv.models.densenet121(num_classes=5), 64, "features", "nchw", 0),
    "tv-efficientnet": (lambda: tv.models.efficientnet_b0(num_classes=5), 64, "features", "nchw", 0),
    "tv-convnext": (lambda: tv.models.convnext_tiny(num_classes=5), 64, "features", "nchw", 0),
    "tv-mobilenet": (lambda: tv.models.mobilenet_v3_small(num_classes=5), 64, "features", "nchw", 0),
    "tv-swin": (_tv_swin, 64, "norm", "nhwc", 0),  # was `features` read as NCHW: a wrong map, no error
    "tv-maxvit": (_tv_maxvit, 64, "blocks.1", "nchw", 0),
    "tv-vit": (_tv_vit, 32, "encoder.layers.encoder_layer_1.ln_1", "tokens", 1),
    "timm-resnet": (lambda: _timm("resnet10t"), 64, "layer4", "nchw", 0),
    "timm-efficientnet": (lambda: _timm("tf_efficientnet_lite0"), 64, "bn2", "nchw", 0),
    "timm-mobilenet": (lambda: _timm("mobilenetv3_small_050"), 64, "blocks", "nchw", 0),
    "timm-regnet": (lambda: _timm("regnetx_002"), 64, "s4", "nchw", 0),
    "timm-convnext": (lambda: _timm("convnext_atto"), 64, "stages", "nchw", 0),
    "timm-swin": (lambda: _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=2, embed_dim=16,
                                depths=(1, 1), num_heads=(1, 2)), 64, "norm", "nhwc", 0),  # was drop_path2
    "timm-maxvit": (lambda: _timm("maxvit_nano_rw_256", img_size=64), 64, "norm", "nchw", 0),
    "timm-maxvit-tf": (lambda: _timm("maxvit_tiny_tf_224", img_size=64, embed_dim=(32, 64), depths=(1, 1)), 64,
                       "stages", "nchw", 0),  # the final norm sits in the head (NormMlpClassifierHead)
    "timm-vit": (lambda: _timm("vit_tiny_patch16_224", img_size=32, depth=2), 32, "blocks.1.norm1", "tokens", 1),
    "timm-deit": (lambda: _timm("deit_tiny_distilled_patch16_224", img_size=32, depth=2), 32, "blocks.1.norm1",
                  "tokens", 2),
}


def reference_gradcam(model: nn.Module, x: torch.Tensor, layer: str, layout: str, prefix: int,
                      target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM at `layer` read in `layout`, from the formula: (B, h, w) at the layer's resolution."""
    store = []  # the layer's output; a clone goes on (DenseNet's in-place ReLU after it cannot change it)
    keep = lambda _m, _i, out: store.append(out) or out.clone()
    handle = dict(model.named_modules())[layer].register_forward_hook(keep)
    try:
        logits = model(x)
    finally:
        handle.remove()
    (a,) = store
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    if layout == "nhwc":
        a, g = a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    elif layout == "tokens":
        side = int((a.shape[1] - prefix) ** 0.5)
        a, g = (t[:, prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side) for t in (a, g))
    weights = g.mean(dim=(2, 3), keepdim=True)
    return (weights * a).sum(1).detach()  # signed: compared with gradcam's relu=False


@pytest.mark.parametrize("family", list(FAMILIES))
def test_auto_layer_is_a_whole_block_and_gradcam_there_is_the_formula(family: str) -> None:
    build, size, expected, layout, prefix = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 3, size, size)
    target = torch.tensor([1, 3])
    out = ats.explain(model, x, "gradcam", targets=target, options={"gradcam": {"relu": False}})["gradcam"]
    assert out.layer == expected
    ref = reference_gradcam(model, x, expected, layout, prefix, target)
    assert ref.std() > 0  # the reference is a real map, not constant
    low = out.values if out.lowres is None else out.lowres
    torch.testing.assert_close(low, ref, rtol=1e-4, atol=1e-6)


class ChannelsLast(nn.Module):
    """A conv stem whose features are then kept (B, h, w, C), as Swin and ConvNeXt blocks do; C = `width`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm(self.stem(x).permute(0, 2, 3, 1))  # (B, h, w, C)
        return self.head(a.mean(dim=(1, 2)))


def test_a_shape_that_fits_both_layouts_is_decided_by_the_input_size() -> None:
    model = ChannelsLast(width=4).eval()  # 16 px images: (B, 4, 4, 4), both layouts fit the 4 × 4 grid
    x = torch.randn(2, 3, 16, 16)
    auto = ats.explain(model, x, "gradcam", layer="norm")["gradcam"]
    declared = ats.explain(model, x, "gradcam", layer=Layer("norm", layout="nhwc"))["gradcam"]
    torch.testing.assert_close(auto.values, declared.values)
    wrong = ats.explain(model, x, "gradcam", layer=Layer("norm", layout="nchw"))["gradcam"]
    assert not torch.allclose(wrong.values, declared.values)


class FixedSize(ChannelsLast):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 16:
            raise RuntimeError("this model takes 16 px images only")
        return super().forward(x)


def test_an_undecidable_layout_is_refused_and_the_escape_hatches_work() -> None:
    model = FixedSize(width=4).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(InputError, match=r"cannot tell whether layer 'norm'.*layout='nchw' or 'nhwc'"):
        ats.explain(model, x, "gradcam", layer="norm")
    by_layout = ats.explain(model, x, "gradcam", layer=Layer("norm", layout="nhwc"))["gradcam"]
    by_reshape = ats.explain(model, x, "gradcam", layer=Layer("norm", reshape=lambda t: t.permute(0, 3, 1, 2)))
    torch.testing.assert_close(by_reshape["gradcam"].values, by_layout.values)
    ref = reference_gradcam(model, x, "norm", "nhwc", 0, by_layout.targets).clamp_min(0)
    torch.testing.assert_close(by_layout.lowres, ref, rtol=1e-4, atol=1e-6)


def test_replacing_a_channels_last_output_puts_it_back_in_its_layout() -> None:
    model = ChannelsLast(width=8).eval()
    x = torch.randn(2, 3, 16, 16)
    fast = ats.explain(model, x, "ablationcam", layer="norm")["ablationcam"]
    slow = ats.explain(model, x, "ablationcam", layer="norm", options={"ablationcam": {"tail": "repeat"}})
    torch.testing.assert_close(fast.values, slow["ablationcam"].values, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="reshape= cannot be inverted"):
        ats.explain(model, x, "ablationcam", layer=Layer("norm", reshape=lambda t: t.permute(0, 3, 1, 2)))


def test_bad_layer_specs_are_one_line() -> None:
    with pytest.raises(InputError, match="layout must be one of"):
        Layer("norm", layout="hwc")
    with pytest.raises(InputError, match="either layout= or reshape="):
        Layer("norm", layout="nhwc", reshape=lambda t: t)
