"""Abnar & Zuidema's experiment (ACL 2020, "Quantifying Attention Flow in Transformers", §4) on TinyViT.

Their protocol: for each example, the Spearman correlation between the importance a method gives each input
token and two references — *blank-out* (the change of the output when that token alone is removed) and
*input gradients* — averaged over examples. Here the tokens are the 8 × 8 patches of the ClutteredDigits
ViTs of the study (`learning_runs.py`, vit-r0/clutter, seeds 0–2, the final weights); the output is the true
class's logit; a patch is blanked to 0; its input-gradient importance is ‖∂y/∂x‖₂ over the patch's pixels and
channels. Methods: raw attention (last layer), rollout, flow, grad-rollout (Chefer et al., ICCV 2021),
AttnLRP (Achtibat et al., ICML 2024) and Chefer et al.'s (CVPR 2021) relevance, with Grad-CAM and saliency as
post-hoc references. Each map is summed per patch. The localisation of the same maps (pointing game, energy in
the digit's box) is kept beside it, on the same models (equal accuracy by construction).

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/abnar_zuidema.py --seeds 0 1 2

Writes `experiments/results/abnar_zuidema.json`: per seed and method, every image's correlations and scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from attnscope import data, fileio, metrics
from attnscope.explain import explain
from attnscope.metrics import causal
from attnscope.models import checkpoint
from attnscope.track.causal import evaluating, logit_scorer

METHODS = ("attention", "rollout", "flow", "grad-rollout", "attnlrp", "chefer", "gradcam", "saliency")
GRID = 8  # TinyViT's patch grid: one cell per token
RESULTS = Path("experiments/results/abnar_zuidema.json")


def gradient_importance(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, G) ‖∂y_target/∂x‖₂ over each patch's pixels and channels."""
    x = x.clone().requires_grad_(True)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        y = model(x).gather(1, targets[:, None]).sum()
        (g,) = torch.autograd.grad(y, x)  # (B, C, H, W), the raw input gradient
    finally:
        for m, f in flags:
            m.training = f
    b, c, h, w = g.shape
    cells = g.square().reshape(b, c, GRID, h // GRID, GRID, w // GRID).sum((1, 3, 5))  # (B, GRID, GRID)
    return cells.sqrt().reshape(b, GRID * GRID).double()


def score_seed(folder: Path, n: int, seed: int) -> dict[str, Any]:
    model, header = checkpoint.load(folder)
    test = data.get("clutter", "test", n, seed=0)
    samples = [test[i] for i in range(n)]
    x, y = torch.stack([s.image for s in samples]), torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])
    with evaluating(model):
        blank = causal.blank_out(logit_scorer(model, y), x, GRID)  # (n, 64)
        accuracy = float((model(x).argmax(1) == y).float().mean())
    grad = gradient_importance(model, x, y)
    out: dict[str, Any] = {"seed": seed, "accuracy_probe": accuracy, "test_acc": header.get("info", {}).get(
        "metrics", {}).get("test_acc"), "methods": {}, "seconds": {}}
    out["reference_agreement"] = causal.row_spearman(blank, grad).tolist()  # how well the two references agree
    for method in METHODS:
        started = time.process_time()
        m = explain(model, x, method, targets=y, batch_size=25)[method].values  # (n, 64, 64)
        out["seconds"][method] = round(time.process_time() - started, 2)
        out["methods"][method] = {
            "blankout_rho": causal.causal_agreement(m, blank, GRID).tolist(),
            "gradient_rho": causal.causal_agreement(m, grad, GRID).tolist(),
            "pointing": metrics.pointing_game(m, boxes).tolist(),
            "energy": metrics.energy_in_box(m, boxes).tolist(),
        }
        print(f"  seed {seed} {method}: ρ blank-out {_nanmean(out['methods'][method]['blankout_rho']):.3f}, "
              f"ρ gradient {_nanmean(out['methods'][method]['gradient_rho']):.3f} "
              f"({out['seconds'][method]:.0f} s)", flush=True)
    return out


def _nanmean(values: list[float]) -> float:
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.nanmean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/learning", help="learning_runs.py's output folder")
    p.add_argument("--job", default="vit-r0-clutter")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=100, help="test images")
    args = p.parse_args()
    torch.set_num_threads(1)
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"command": vars(args), "seeds": []}
    have = {r["seed"] for r in done["seeds"] if r.get("job", "vit-r0-clutter") == args.job}
    for seed in args.seeds:
        folder = Path(args.runs) / f"{args.job}-s{seed}"
        if seed in have or not (folder / "done.json").exists():
            continue
        done["seeds"].append({"job": args.job, **score_seed(folder, args.n, seed)})
        fileio.write_json(RESULTS, done)


if __name__ == "__main__":
    main()
