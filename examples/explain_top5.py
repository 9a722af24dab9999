"""Maps of several targets per image from one forward pass: the top-5 classes, and a contrastive pair.

    python examples/explain_top5.py            # a few seconds on a CPU
"""

import torch

import attnscope as ats

torch.manual_seed(0)
model = ats.models.get("smallcnn").eval()  # random weights: the point here is the call, not the maps
data = ats.data.ClutteredDigits("test", n=4)
images = torch.stack([data[i].image for i in range(4)])  # (4, 3, 64, 64)

with torch.no_grad():
    top5 = model(images).topk(5, dim=1).indices  # (4, 5) classes
maps = ats.explain(model, images, ("gradcam", "saliency"), targets=top5)  # one forward, one batched backward
print("maps", tuple(maps["gradcam"].values.shape), "targets", maps.targets.tolist()[0])  # (4, 5, 64, 64)
first = maps["gradcam"][:, 0]  # the best class of each image, as a (4, 64, 64) map
print("column 0 is the predicted class:", torch.equal(first.targets, maps.predicted))

# A contrastive target: why class 3 rather than class 8? Any scores (B,) or (B, K) from the logits.
contrast = ats.explain(model, images, "gradcam", targets=lambda logits: logits[:, 3] - logits[:, 8])
print("contrastive map", tuple(contrast["gradcam"].values.shape))
