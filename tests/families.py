"""Tiny random-weight models of every family issue 28 names, built from configs (nothing downloaded).

`FAMILIES[name]` = (builder, image size, the layer `layer="auto"` must pick, the transformer methods that apply);
the other transformer methods must refuse with a reason that names the ones that do. Shared by
tests/test_families.py and docs/models.md's table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ATTENTION_METHODS = ("attention", "rollout", "grad-rollout", "flow", "chefer", "attnlrp", "legrad")
GLOBAL = ATTENTION_METHODS
WINDOWED = ("attention", "rollout", "grad-rollout", "chefer", "attnlrp", "legrad")  # flow: one token set only


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    size: int
    layer: str
    methods: tuple[str, ...]  # the transformer methods that apply
    output: object = None  # explain's output= (image towers)
    kind: str = "classifier"  # "classifier" | "detector" | "segmenter" | "tower"


def _seed(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """The model built from seed 0, in eval mode; parameters a library starts at zero (heads, layer scales,
    BatchNorm weights of residual branches, attention biases) drawn at random, so every path carries a signal."""

    def seeded() -> nn.Module:
        torch.manual_seed(0)
        model = build().eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.is_floating_point() and not p.any():
                    p.normal_(0, 0.1)
        return model

    return seeded


def _signal(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """`build` with every linear and convolution weight drawn with std 1/√fan-in: a library's init at std 0.02
    (LeViT, BEiT) lets the signal of a random model fade to nothing through a few layers."""

    def built() -> nn.Module:
        model = build()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.weight.normal_(0, m.weight[0].numel() ** -0.5)
        return model

    return built


TV = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=64)
SWIN = dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2)


def hf(config: str, model: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers as T

        return getattr(T, model)(getattr(T, config)(**kw))

    return _seed(_signal(build))


def timm_model(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=5, **kw)

    return _seed(_signal(build))


def tv_swin(v2: bool = False) -> nn.Module:
    from torchvision.models import swin_transformer as s

    extra = dict(block=s.SwinTransformerBlockV2, downsample_layer=s.PatchMergingV2) if v2 else {}
    return s.SwinTransformer([4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=5, **extra)


def tv_maxvit() -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit((64, 64), 8, 2, [16, 32], [1, 1], 8, 0.0, num_classes=5)


def tv_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return model


class OpenClipTower(nn.Module):
    """open_clip's ViT image tower (its own VisionTransformer class, nn.MultiheadAttention inside), tiny."""

    def __init__(self) -> None:
        super().__init__()
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        self.visual = _build_vision_tower(16, CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8,
                                                            image_size=32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class ClipImageFeatures(nn.Module):
    """A Hugging Face CLIPModel called as `get_image_features` (the common CLIP wrapper): its text tower never runs."""

    def __init__(self) -> None:
        super().__init__()
        import transformers as T

        text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        self.clip = T.CLIPModel(T.CLIPConfig(vision_config=TV, text_config=text, projection_dim=16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_image_features(pixel_values=x)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def detector(kind: str) -> nn.Module:
    import torchvision
    from torchvision.models import detection
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    resnet = torchvision.models.resnet18(weights=None)
    size = dict(min_size=64, max_size=64)
    if kind in ("retinanet", "fcos"):
        backbone = _resnet_fpn_extractor(resnet, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        return getattr(detection, "RetinaNet" if kind == "retinanet" else "FCOS")(backbone, num_classes=3,
                                                                                 score_thresh=0.0, **size)
    backbone = _resnet_fpn_extractor(resnet, 5)
    few = dict(rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=5)  # fast
    return getattr(detection, "FasterRCNN" if kind == "fasterrcnn" else "MaskRCNN")(backbone, num_classes=3, **size,
                                                                                    **few)


def segmenter(kind: str) -> nn.Module:
    from torchvision.models import segmentation

    return getattr(segmentation, kind)(weights=None, weights_backbone=None, num_classes=3)


def detr() -> nn.Module:
    import transformers as T

    backbone = T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                              layer_type="basic", out_features=["stage4"])
    return T.DetrForObjectDetection(T.DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=16,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, num_queries=5, num_labels=3))


FAMILIES: dict[str, Family] = {
    # ViT-likes: the head reads CLS -> the input of the last attention layer
    "hf-vit": Family(hf("ViTConfig", "ViTForImageClassification", num_labels=5, **TV), 32,
                     "vit.layers.1.layernorm_before", GLOBAL),
    "hf-deit": Family(hf("DeiTConfig", "DeiTForImageClassification", num_labels=5, **TV), 32,
                      "deit.layers.1.layernorm_before", GLOBAL),
    "hf-beit": Family(hf("BeitConfig", "BeitForImageClassification", num_labels=5, use_mean_pooling=True, **TV), 32,
                      "beit.layers.1", GLOBAL),  # mean-pooled: the last token block
    "hf-dinov2-registers": Family(hf("Dinov2WithRegistersConfig", "Dinov2WithRegistersForImageClassification",
                                     num_labels=5, num_register_tokens=2, **TV), 32,
                                  "dinov2_with_registers.layernorm", GLOBAL),  # reads CLS and the patches' mean
    "hf-clip-vision": Family(hf("CLIPVisionConfig", "CLIPVisionModelWithProjection", **TV), 32,
                             "vision_model.encoder.layers.1.layer_norm1", GLOBAL, output="image_embeds",
                             kind="tower"),
    "hf-clip-image-features": Family(_seed(ClipImageFeatures), 32, "clip.vision_model.encoder.layers.1.layer_norm1",
                                     GLOBAL, kind="tower"),
    "open_clip": Family(_seed(OpenClipTower), 32, "visual.transformer.resblocks.1.ln_1", GLOBAL, kind="tower"),
    "timm-vit-registers": Family(timm_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                            num_heads=2, reg_tokens=4), 32, "blocks.1.norm1", GLOBAL),
    "timm-eva02": Family(timm_model("eva02_tiny_patch14_224", img_size=28, patch_size=7, embed_dim=32, depth=2,
                                    num_heads=2), 28, "blocks.1", GLOBAL),  # mean-pooled, norm is the identity
    "torchvision-vit": Family(_seed(tv_vit), 32, "encoder.layers.encoder_layer_1.ln_1", GLOBAL),
    # windowed and hierarchical
    "torchvision-swin": Family(_seed(tv_swin), 32, "norm", WINDOWED),
    "torchvision-swin-v2": Family(_seed(lambda: tv_swin(True)), 32, "norm", WINDOWED),
    "timm-swin": Family(timm_model("swin_tiny_patch4_window7_224", img_size=32, embed_dim=16, depths=(1, 1),
                                   num_heads=(1, 2), window_size=2), 32, "norm", WINDOWED),
    "timm-swin-v2": Family(timm_model("swinv2_tiny_window8_256", img_size=32, embed_dim=16, depths=(1, 1),
                                      num_heads=(1, 2), window_size=2), 32, "norm", WINDOWED),
    "hf-swin": Family(hf("SwinConfig", "SwinForImageClassification", num_labels=5, **SWIN), 32, "swin.layernorm",
                      WINDOWED),
    "hf-swin-v2": Family(hf("Swinv2Config", "Swinv2ForImageClassification", num_labels=5, **SWIN), 32,
                         "swinv2.layernorm", WINDOWED),
    "torchvision-maxvit": Family(_seed(tv_maxvit), 64, "blocks.1", WINDOWED),
    "timm-maxvit": Family(timm_model("maxvit_pico_rw_256", img_size=64, embed_dim=(16, 32), depths=(1, 1),
                                     block_type=("M", "M"), stem_width=8, transformer_dim_head=8,
                                     transformer_window_size=(2, 2), transformer_grid_size=(2, 2)), 64, "norm",
                          WINDOWED),
    "timm-levit": Family(timm_model("levit_128s", img_size=128, embed_dim=(16, 32, 48), key_dim=8, depth=(1, 1, 1),
                                    num_heads=(1, 2, 3)), 128, "stages", WINDOWED),
    "timm-coatnet": Family(timm_model("coatnet_nano_rw_224", img_size=64, embed_dim=(8, 16, 24, 32),
                                      depths=(1, 1, 1, 1), stem_width=8, transformer_dim_head=8), 64, "norm", WINDOWED),
    "timm-mobilevit": Family(timm_model("mobilevit_xxs"), 128, "final_conv", WINDOWED),
    # no attention
    "timm-convnext-v2": Family(timm_model("convnextv2_atto"), 64, "stages", ()),
    # detectors and segmenters: the backbone's last stage
    "torchvision-fasterrcnn": Family(_seed(lambda: detector("fasterrcnn")), 64, "backbone.body.layer4", (),
                                     kind="detector"),
    "torchvision-maskrcnn": Family(_seed(lambda: detector("maskrcnn")), 64, "backbone.body.layer4", (),
                                   kind="detector"),
    "torchvision-retinanet": Family(_seed(lambda: detector("retinanet")), 64, "backbone.body.layer4", (),
                                    kind="detector"),
    "torchvision-fcos": Family(_seed(lambda: detector("fcos")), 64, "backbone.body.layer4", (), kind="detector"),
    "torchvision-fcn": Family(_seed(lambda: segmenter("fcn_resnet50")), 64, "backbone.layer4", (), kind="segmenter"),
    "torchvision-deeplabv3": Family(_seed(lambda: segmenter("deeplabv3_mobilenet_v3_large")), 64, "backbone.16", (),
                                    kind="segmenter"),
    "torchvision-lraspp": Family(_seed(lambda: segmenter("lraspp_mobilenet_v3_large")), 64, "backbone.16", (),
                                 kind="segmenter"),
    "hf-segformer": Family(hf("SegformerConfig", "SegformerForSemanticSegmentation", num_channels=3,
                              num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                              patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                              decoder_hidden_size=16, num_labels=3), 32, "segformer.stages.1",
                           ("attention", "attnlrp", "legrad"), kind="segmenter"),
    "hf-detr": Family(_seed(detr), 64, "model.backbone.model.encoder.stages.3", ("attnlrp",), output="logits",
                      kind="detector"),
}
