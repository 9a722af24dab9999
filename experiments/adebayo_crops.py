"""Adebayo et al.'s cascading randomisation (NeurIPS 2018, §4) on EfficientNet-Lite0 with 100+ photo crops, the
paper's re-initialisation beside PyTorch's, and each step's maps compared with an edge map of the input.

The 9 annotated photos of `sanity_efficientnet.py` gave CIs too wide to conclude (Grad-CAM after the full
cascade: 0.33 [0.03, 0.62]). Here: `--n` random crops of the bundled scikit-image photos (224 px, a fixed set
drawn from `--crop-seed`), the cascade from the classifier down to the stem (blocks at name depth 3), with
`--init default` (each module's `reset_parameters`, PyTorch's) or `--init trunc-normal` (the paper's: weights
from N(0, 0.01²) truncated at ±2σ), the blocks drawn from `--seed`. At every step each method's map is compared
(Spearman of |map|, SSIM) with the trained model's map and with the Sobel edge map of the input: a method whose
maps become the edge map as the weights become random shows the input, not the model (Adebayo et al.'s Fig. 1).

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/adebayo_crops.py --init default --seed 0

One JSON per (init, seed) in `experiments/results/adebayo_crops/`, every image's similarity at every step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from sanity_efficientnet import crops, relu6_as_relu

from attnscope import fileio, models
from attnscope.explain import Explainer, explain
from attnscope.metrics.similarity import compare, prepare
from attnscope.sanity.calibration import sobel_map
from attnscope.sanity.randomization import randomise
from attnscope.sanity.settings import Comparison, Randomisation

METHODS = ("saliency", "gradcam", "guided-backprop", "guided-gradcam")
SIMILARITIES = ("spearman_abs", "ssim")
RESULTS = Path("experiments/results/adebayo_crops")


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = models.get("efficientnet_lite0").eval()
    x = crops(args.n, args.crop_seed)
    with torch.no_grad():
        before = model(x[:4])
        assert relu6_as_relu(model) == 33 and torch.equal(before, model(x[:4]))  # Guided Backprop needs nn.ReLU
    edges = prepare(sobel_map(x), SIMILARITIES)
    to_edges: list[dict[str, dict[str, list[float]]]] = []  # per call of maps_of: the trained model, then each step

    def maps_of(work: torch.nn.Module, layer: Any) -> dict[str, torch.Tensor]:
        found = explain(work, x, METHODS, None, layer, None, args.batch_size)
        maps = {k: v.values for k, v in found.items()}
        to_edges.append({k: {s: v.tolist() for s, v in compare(edges, prepare(m, SIMILARITIES)).items()}
                         for k, m in maps.items()})
        return maps

    started = time.process_time()
    result = randomise(model, x, maps_of, Explainer(METHODS, batch_size=args.batch_size), "cascading",
                       Randomisation(blocks=3, init=args.init, seed=args.seed),
                       Comparison(metrics=SIMILARITIES, calibration=("random", "sobel"), keep=0), progress=True)
    steps = result.steps
    return {"command": vars(args), "steps": steps, "meta": {k: v for k, v in result.meta.items() if k != "notes"},
            "cpu_s": round(time.process_time() - started, 1),
            "to_trained": {m: {b: {s: v.tolist() for s, v in result.scores[m][b].items()} for b in steps}
                           for m in result.scores},
            "to_edges": {m: {"trained": to_edges[0][m], **{b: to_edges[i + 1][m] for i, b in enumerate(steps)}}
                         for m in METHODS}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="default", choices=["default", "trunc-normal"])
    p.add_argument("--seed", type=int, default=0, help="the re-initialisation draws")
    p.add_argument("--n", type=int, default=100, help="photo crops")
    p.add_argument("--crop-seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    path = RESULTS / f"{args.init}-s{args.seed}.json"
    if path.exists():
        return
    record = run(args)
    fileio.write_json(path, record)
    print(f"{path}: {record['cpu_s']:.0f} CPU s", flush=True)


if __name__ == "__main__":
    main()
