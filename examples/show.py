"""Draw a model's maps over its images with one call: `python examples/show.py [RUN_OR_CHECKPOINT] [OUT.png]`.

With a run folder (e.g. `runs/demo`, made by `make demo`) the trained SmallCNN is explained; without one a
randomly initialised SmallCNN is (its maps are then noise: the point is the picture). Writes OUT.png
(default maps.png): rows = test images, columns = the image and one overlay per method, grouped by kind,
each with a colour bar saying what its colours mean.
"""

from __future__ import annotations

import sys

import torch

import attnscope as ats
from attnscope.models import checkpoint


def main(source: str | None, out: str) -> None:
    model = checkpoint.load(source)[0] if source else ats.models.get("smallcnn").eval()
    test = ats.data.ClutteredDigits("test", n=3)
    images = torch.stack([test[i].image for i in range(3)])  # (3, 3, 64, 64) in [0, 1]
    boxes = torch.stack([test[i].box for i in range(3)])  # (3, 4)
    labels = torch.tensor([test[i].label for i in range(3)])
    maps = ats.explain(model, images, ("gradcam", "guided-backprop", "ig", "occlusion"), targets=labels)
    ats.show(images, maps, boxes=boxes, labels=labels).save(out)  # rows: explained class, p, true class
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2] if len(sys.argv) > 2 else "maps.png")
