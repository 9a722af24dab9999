"""A loss on Grad-CAM trains the model: explain(..., differentiable=True) keeps the graph.

Ten steps of SmallCNN on decoy ClutteredDigits, with cross-entropy plus the share of Grad-CAM mass
outside the digit's box, written out by hand: `ats.guide.cam(model, x, y, boxes)` is the same loss, packaged.

    python examples/differentiable_gradcam.py [--steps 10]
"""

import argparse

import torch
import torch.nn.functional as F

import attnscope as ats

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=10)
steps = parser.parse_args().steps

torch.manual_seed(0)
model = ats.models.get("smallcnn", widths=[16, 32, 64])
data = ats.data.get("clutter-decoy", "train", n=32 * steps)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step in range(steps):
    batch = [data[i] for i in range(32 * step, 32 * (step + 1))]
    x, y = torch.stack([s.image for s in batch]), torch.tensor([s.label for s in batch])
    outside = ~ats.metrics.box_masks(torch.stack([s.box for s in batch]), tuple(x.shape[-2:]))  # (B, H, W)
    found = ats.explain(model, x, "gradcam", targets=y, differentiable=True)  # the step's one forward
    cam = found["gradcam"].values.clamp_min(0)
    outside_share = ((cam * outside).flatten(1).sum(1) / cam.flatten(1).sum(1).clamp_min(1e-12)).mean()
    loss = F.cross_entropy(found.logits, y) + 1.0 * outside_share
    opt.zero_grad()
    loss.backward()  # through the map into the weights
    opt.step()
    print(f"step {step}: cross-entropy {F.cross_entropy(found.logits, y).item():.3f}, "
          f"Grad-CAM mass outside the box {outside_share.item():.3f}")
print("model still in train mode after explain:", model.training)
