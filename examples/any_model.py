"""Bring your own model and task: Swin (channels-last), Hugging Face ViT, a detector, a segmenter, embeddings.

    python examples/any_model.py

Every model here is built with random weights from code (nothing is downloaded); the point is the calls.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

import attnscope as ats
from attnscope.explain import BoxScore, Layer, RegionScore, Similarity


def main() -> None:
    x = torch.rand(2, 3, 64, 64)

    # Swin keeps its features (B, h, w, C): "auto" picks the final norm and reads it channels-last.
    swin = torchvision.models.swin_transformer.SwinTransformer([4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=5)
    amap = ats.explain(swin.eval(), x, "gradcam")["gradcam"]
    print(f"swin: gradcam at {amap.layer}, maps {tuple(amap.values.shape)}")
    # What detection cannot decide is declared: layout="nhwc" | "nchw" | "tokens", or reshape= any callable.
    same = ats.explain(swin, x, "gradcam", layer=Layer("norm", layout="nhwc"))["gradcam"]
    print(f"swin: declared layout gives the same map: {torch.allclose(same.values, amap.values)}")

    # A Hugging Face ViT from a config: explain reads .logits; attention methods force the eager path for the call.
    import transformers

    config = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    vit = transformers.ViTForImageClassification(config).eval()
    maps = ats.explain(vit, x, ("rollout", "gradcam"))
    print(f"hf vit: rollout {tuple(maps['rollout'].values.shape)}, gradcam at {maps['gradcam'].layer}")

    # Detection: the score of the detection of class 1 that best overlaps a box (IoU >= 0.5).
    detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=0.0).eval()
    with torch.no_grad():
        found = detector(x[:1])[0]
    box_target = BoxScore(found["boxes"][0], int(found["labels"][0]))
    saliency = ats.explain(detector, x[:1], "saliency", targets=box_target)["saliency"]
    print(f"detector: saliency {tuple(saliency.values.shape)}")

    # Segmentation: class 2's logit summed over a region of torchvision segmentation's "out".
    body = torchvision.models._utils.IntermediateLayerGetter(
        nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 8, 3, stride=2, padding=1), act=nn.ReLU())), {"act": "out"})
    segmenter = torchvision.models.segmentation.fcn.FCN(body, torchvision.models.segmentation.fcn.FCNHead(8, 3))
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[16:48, 16:48] = True
    seg = ats.explain(segmenter.eval(), x, "gradcam", targets=RegionScore(2, region), layer="backbone.act")
    print(f"segmenter: gradcam {tuple(seg['gradcam'].values.shape)}")

    # Embeddings: cosine similarity to K reference embeddings gives K maps per image in one call.
    tower = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    refs = torch.randn(3, 4)
    sim = ats.explain(tower, x, "gradcam", targets=Similarity(refs), layer="1")["gradcam"]
    print(f"embeddings: maps {tuple(sim.values.shape)} for 3 references")


if __name__ == "__main__":
    main()
