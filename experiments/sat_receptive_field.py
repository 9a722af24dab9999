"""How local are Show, Attend and Tell's annotations? The effective receptive field (Luo et al., NeurIPS 2016)
of the frozen DigitScenes encoders of `sat_grounding.py`.

For every object of a test scene, take the annotation a_i of the grid cell under the object's box centre and
the gradient G = Σ_colour |∂(Σ_c a_ic)/∂x| of its channel sum with respect to the input (the encoder in eval
mode). Reported, averaged over objects: the share of G inside the object's own box, inside the other
objects' boxes and inside the cell's own footprint, and the radii around the cell centre that hold 50 % and
90 % of G. Also the chance level of the grounding metric (the share of the image that an object word's box
covers) for each scene setting.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_receptive_field.py --runs runs/sat_grounding
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from sat_grounding import CROWDED, SCENES

from attnscope import data, fileio
from attnscope.models import checkpoint


def receptive_field(features: torch.nn.Module, samples: list[Any]) -> dict[str, float]:
    """Mean ERF statistics of the annotation under each object's centre (see the module docstring)."""
    x = torch.stack([s.image for s in samples]).requires_grad_(True)  # (B, 3, H, W)
    size = x.shape[-1]
    with torch.no_grad():
        grid = features(x[:1]).shape[-1]
    cell = size / grid
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    stats: dict[str, list[float]] = {"own_box": [], "other_boxes": [], "own_cell": [], "r50": [], "r90": []}
    for k in range(max(len(s.objects) for s in samples)):
        rows = [b for b, s in enumerate(samples) if k < len(s.objects)]
        a = features(x)  # (B, C, h, w)
        picked = []
        for b in rows:
            x0, y0, x1, y1 = samples[b].objects[k].box
            gx, gy = min(int((x0 + x1) / 2 / cell), grid - 1), min(int((y0 + y1) / 2 / cell), grid - 1)
            picked.append((b, gx, gy))
        total = sum(a[b, :, gy, gx].sum() for b, gx, gy in picked)
        (g,) = torch.autograd.grad(total, x)
        for b, gx, gy in picked:
            m = g[b].abs().sum(0)  # (H, W)
            mass = m.sum().clamp_min(1e-12)
            boxes = [o.box for o in samples[b].objects]
            inside = lambda box, m=m: float(m[box[1] : box[3], box[0] : box[2]].sum())  # noqa: E731
            stats["own_box"].append(inside(boxes[k]) / float(mass))
            stats["other_boxes"].append(sum(inside(o) for j, o in enumerate(boxes) if j != k) / float(mass))
            c = (round(gx * cell), round(gy * cell), round((gx + 1) * cell), round((gy + 1) * cell))
            stats["own_cell"].append(inside(c) / float(mass))
            r = ((xx - (gx + 0.5) * cell) ** 2 + (yy - (gy + 0.5) * cell) ** 2).sqrt().flatten()
            order = r.argsort()
            cum = m.flatten()[order].cumsum(0) / mass
            stats["r50"].append(float(r[order][int((cum < 0.5).sum())]))
            stats["r90"].append(float(r[order][int((cum < 0.9).sum())]))
    return {k: statistics.mean(v) for k, v in stats.items()} | {"grid": grid, "objects": len(stats["r50"])}


def chance(samples: list[Any]) -> float:
    """Share of the image inside the box of an object word of the first reference (the grounding's chance)."""
    shares = [((t.box[2] - t.box[0]) * (t.box[3] - t.box[1])) / s.image.shape[-1] ** 2
              for s in samples for t in s.tokens if t.box is not None]
    return statistics.mean(shares)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/sat_grounding", help="the folder with sat_grounding.py's encoder-* runs")
    p.add_argument("--n", type=int, default=100, help="test scenes")
    p.add_argument("--out", default="experiments/results/sat_receptive_field.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = {"2-3 objects": SCENES, "crowded": CROWDED}
    scenes = {name: [data.get("scenes", "test", args.n, seed=0, **cfg)[i] for i in range(args.n)]
              for name, cfg in settings.items()}
    results: dict[str, Any] = {"chance": {name: chance(s) for name, s in scenes.items()}, "encoders": {}}
    for run in sorted(Path(args.runs).glob("encoder-*")):
        model, _ = checkpoint.load(run)
        features = model.features.eval().requires_grad_(False)
        results["encoders"][run.name] = {name: receptive_field(features, s) for name, s in scenes.items()}
    fileio.write_json(args.out, {"command": vars(args), **results})
    print("chance of grounding:", {k: round(v, 3) for k, v in results["chance"].items()})
    print("| encoder | scenes | grid | own box | other boxes | own cell | r50 px | r90 px |")
    print("|---|---|---|---|---|---|---|---|")
    for enc, by in results["encoders"].items():
        for name, r in by.items():
            print(f"| {enc} | {name} | {r['grid']}×{r['grid']} | {r['own_box']:.2f} | {r['other_boxes']:.2f} | "
                  f"{r['own_cell']:.2f} | {r['r50']:.1f} | {r['r90']:.1f} |")


if __name__ == "__main__":
    main()
