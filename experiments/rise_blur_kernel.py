"""Insertion AUC (blur substrate) with the old truncated Gaussian against RISE's own kernel, on a
trained SmallCNN: how much the fix of the `blur` substrate moved the numbers.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/rise_blur_kernel.py --checkpoint runs/sanity-base
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from attnscope import data, explain
from attnscope.evaluate import class_probability
from attnscope.metrics import faithfulness as faith
from attnscope.models import sources
from attnscope.models.runs import checkpoint_data
from attnscope.track import probe_from


def truncated_gaussian_blur(images: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The substrate attnscope used before: a normalised 11-tap Gaussian (σ = 5), separable, zero padding."""
    r = torch.arange(size, dtype=images.dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = images.shape[1]
    x = F.conv2d(images, g.view(1, 1, 1, size).expand(c, 1, 1, size), padding=(0, size // 2), groups=c)
    return F.conv2d(x, g.view(1, 1, size, 1).expand(c, 1, size, 1), padding=(size // 2, 0), groups=c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/sanity-base")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--methods", default="gradcam,saliency,ig")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, header = sources.build(args.checkpoint)
    name, data_seed, data_cfg = checkpoint_data(args.checkpoint, header)
    probe = probe_from(data.get(name, "test", args.images, seed=data_seed, **data_cfg), args.images)
    f = class_probability(model, probe.labels)
    old = truncated_gaussian_blur(probe.images)
    for m in args.methods.split(","):
        maps = explain(model, probe.images, m, probe.labels)[m].values
        before = faith.insertion_auc(maps, probe.images, f, old)
        after = faith.insertion_auc(maps, probe.images, f, "blur")
        print(f"{m}: truncated Gaussian {before.mean():.4f}, RISE's kernel {after.mean():.4f}, "
              f"difference {(after - before).mean():+.4f} (largest per image {(after - before).abs().max():.4f})")


if __name__ == "__main__":
    main()
