"""Trust in one script: train a small classifier, then the leaderboard with every metric group, the
repaired randomisation tests and the ground-truth interventions — the Python API behind
`attnscope bench`, `attnscope sanity --test smprt,emprt,random-logit` and `attnscope interventions`.

    PYTHONPATH=src python examples/trust.py            # trains 2 epochs on 1,000 images first (~1 min)
    PYTHONPATH=src python examples/trust.py --checkpoint runs/sanity-base
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import attnscope as ats
from attnscope.evaluate.interventions import clutter_scenes, interventions
from attnscope.models import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a trained ClutteredDigits run (default: train one)")
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint is None:
        from attnscope.train import TrainConfig, fit

        out = tempfile.mkdtemp(prefix="attnscope-trust-")
        model = fit(TrainConfig(model="smallcnn", data="clutter", n=1000, n_test=200, epochs=2, out=out,
                                quiet=True)).model.eval()
    else:
        model, _ = checkpoint.load(args.checkpoint)
    test = ats.data.get("clutter", "test", args.images, seed=0)
    samples = [test[i] for i in range(args.images)]
    images = torch.stack([s.image for s in samples])
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])
    masks = torch.stack([s.mask for s in samples])
    methods = ["gradcam", "saliency", "inputxgrad"]

    # The leaderboard: one row per method, one column per metric; calibration rows bound each column.
    metrics = ["pointing", "mass_mask", "auc_mask", "deletion_zero", "faith_corr", "max_sensitivity", "sparseness"]
    settings = ats.evaluate.Settings(step=256, perturbations=4)
    guess = ats.evaluate.estimate(model, images, labels, boxes, masks, methods, metrics, settings=settings)
    print(f"estimated {guess.total:.1f} s")
    board = ats.evaluate.leaderboard(model, images, labels, boxes, masks, methods, metrics, settings=settings)
    for row in board.rows:
        print(row["method"], {c: round(row[c], 3) for c in board.columns})

    # Metrics are plain functions of tensors: here ROAD, scored by the accuracy as in the paper.
    maps = ats.explain(model, images, "gradcam", labels)["gradcam"].values
    road = ats.metrics.road_curve(maps, images, ats.evaluate.correct_class(model, labels), percentages=(20, 50, 80))
    print("ROAD MoRF accuracy at 20/50/80 %:", road.mean(0).tolist())
    # Infidelity of several methods from one set of passes (its perturbed images do not depend on the map).
    several = {m: v.values for m, v in ats.explain(model, images, methods, labels).items()}
    infid = ats.metrics.infidelity(several, images, ats.evaluate.class_logit(model, labels), n=8)
    print("infidelity:", {m: round(float(v.mean()), 4) for m, v in infid.items()})

    # The repaired randomisation tests: a method passes sMPRT and random-logit when its similarity is low,
    # eMPRT when the complexity rises.
    spearman = ats.sanity.Comparison(("spearman_abs",))
    smooth = ats.sanity.smprt(model, images, methods, targets=labels, samples=4, comparison=spearman)
    print("sMPRT, all blocks:", {m: round(smooth.value(m, smooth.steps[-1], "spearman_abs"), 3) for m in methods})
    rise = ats.sanity.emprt(model, images, methods, targets=labels)
    print("eMPRT complexity rise:", {m: round(rise.value(m, "all blocks", "complexity_rise"), 3) for m in methods})
    other = ats.sanity.random_logit(model, images, methods, targets=labels, comparison=spearman)
    print("random logit:", {m: round(other.value(m, "random class", "spearman_abs"), 3) for m in methods})

    # Ground-truth interventions: remove the digit or the fragments and compare the drops with the maps.
    scenes = clutter_scenes(ats.data.get("clutter", "test", args.images, seed=0), args.images)
    for row in interventions(model, scenes, methods).summary():
        print(row["method"], "single deletion", round(row["single_deletion"], 3), "background mass",
              round(row["background_mass"], 3))


if __name__ == "__main__":
    main()
