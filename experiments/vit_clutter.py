"""TinyViT vs SmallCNN on ClutteredDigits: test accuracy, and how well each map points at the digit.

The three models are trained by the library's own loop (what `attnscope train --model
vit|smallcnn|ltpa --data clutter` runs) on the same data (LTPA's epochs may be set apart); then
the maps of each method, for the true class, on the first `--probe` test images are scored
against the digit's box: pointing game (Zhang et al. 2016) and energy in box (Wang et al. 2020),
on the raw map and on the min–max normalised map (rollout maps sit on a large floor that the raw
energy counts everywhere).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/vit_clutter.py --out runs/vit_clutter

Writes `summary.json` and `summary.md` in `--out`; rerunning reuses finished training runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnscope import data, fileio
from attnscope.evaluate import Settings, leaderboard
from attnscope.explain import Explainer
from attnscope.models import checkpoint
from attnscope.train import TrainConfig, fit

VIT_METHODS = {
    "attention": ("attention", {}),
    "rollout": ("rollout", {}),
    "rollout (max, discard 0.9)": ("rollout", {"head_fusion": "max", "discard_ratio": 0.9}),
    "grad-rollout": ("grad-rollout", {}),
    "flow": ("flow", {}),
    "gradcam (tokens)": ("gradcam", {}),
    "attnlrp": ("attnlrp", {}),
    "attnlrp (cp)": ("attnlrp", {"attention": "cp"}),
    "chefer": ("chefer", {}),
    "legrad": ("legrad", {}),
}
CNN_METHODS = {"gradcam": ("gradcam", {})}
LTPA_METHODS = {"ltpa": ("ltpa", {}), "gradcam": ("gradcam", {})}  # ltpa: every estimator's map and their mean
TRAIN = {  # per model: what differs from TrainConfig's defaults
    "vit": {"weight_decay": 0.05},
    "smallcnn": {},
    "ltpa": {},
}


def train(model: str, out: Path, args: argparse.Namespace, epochs: int) -> tuple[torch.nn.Module, dict, float]:
    """Train `model` (or reuse a finished run in `out`; with --as-is any saved run); the model, its last metrics
    and training seconds."""
    metrics = out / "metrics.jsonl"
    done = metrics.exists() and (len(metrics.read_text().splitlines()) >= epochs or args.as_is)
    started = time.perf_counter()
    if not done:
        config = TrainConfig(model=model, data="clutter", out=str(out), n=args.n, n_test=args.n_test,
                             epochs=epochs, batch_size=64, seed=args.seed, quiet=True,
                             resume=(out / "checkpoints").exists(), **TRAIN[model])
        fit(config)
    seconds = time.perf_counter() - started
    net, _ = checkpoint.load(out)
    last = json.loads(metrics.read_text().splitlines()[-1])
    return net.eval(), last, seconds


def score(model: torch.nn.Module, methods: dict, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
          calibration: tuple[str, ...] = ()) -> list[dict]:
    """The leaderboard rows of each method (for the true class): pointing game, energy in box on the
    raw and on the min–max normalised map, ms per image. A method with sub-maps (LTPA's per-estimator
    maps "ltpa/stages.1", ...) gives one row each."""
    rows = {label: Explainer(method, options={method: opts} if opts else None, batch_size=50)
            for label, (method, opts) in methods.items()}
    board = leaderboard(model, images, labels, boxes, how=rows, metrics=("pointing", "energy_box", "energy_box_norm"),
                        settings=Settings(calibration=calibration))
    return [{"method": r["method"], "pointing": r["pointing"], "energy_in_box": r["energy_box"],
             "energy_in_box_normalized": r["energy_box_norm"], "ms_per_image": r["ms_per_image"]} for r in board.rows]


def markdown(summary: dict) -> str:
    lines = [
        "| model | test accuracy | method | pointing game | energy in box | energy in box (min–max) | ms / image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['model']} | {row['test_acc']:.3f} | {row['method']} | {row['pointing']:.3f} | "
            f"{row['energy_in_box']:.3f} | {row['energy_in_box_normalized']:.3f} | {row['ms_per_image']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/vit_clutter")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ltpa-epochs", type=int, default=None, help="LTPA's epochs (default: --epochs)")
    parser.add_argument("--probe", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="vit,smallcnn,ltpa", help="which of vit, smallcnn, ltpa to run")
    parser.add_argument("--methods", default=None, help="ViT method labels to score, joined by ; (default: all)")
    parser.add_argument("--as-is", action="store_true", help="score a saved run even if it trained fewer epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.perf_counter()

    test = data.get("clutter", "test", args.probe, seed=0)
    samples = [test[i] for i in range(args.probe)]
    images = torch.stack([s.image for s in samples])  # (N, 3, 64, 64)
    labels = torch.tensor([int(s.label) for s in samples])
    boxes = torch.stack([s.box for s in samples])  # (N, 4)

    rows, trained = [], {}
    epochs = {"vit": args.epochs, "smallcnn": args.epochs, "ltpa": args.ltpa_epochs or args.epochs}
    vit_methods = VIT_METHODS if args.methods is None else {k: VIT_METHODS[k] for k in args.methods.split(";")}
    chosen = args.models.split(",")
    for model_name, methods in (("vit", vit_methods), ("smallcnn", CNN_METHODS), ("ltpa", LTPA_METHODS)):
        if model_name not in chosen:
            continue
        model, last, seconds = train(model_name, out / model_name, args, epochs[model_name])
        trained[model_name] = {"test_acc": last["test_acc"], "train_s": round(seconds, 1), "epochs": last["epoch"]}
        calibration = ("random",) if model_name == "smallcnn" else ()  # once: it does not depend on the model
        for row in score(model, methods, images, labels, boxes, calibration):
            rows.append({"model": "-" if row["method"] == "random" else model_name,
                         "test_acc": float("nan") if row["method"] == "random" else last["test_acc"], **row})
        print(f"{model_name}: test accuracy {last['test_acc']:.4f}", flush=True)
    summary = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/vit_clutter.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "train": {"n": args.n, "n_test": args.n_test, "epochs": epochs, "batch_size": 64, **TRAIN},
        "models": trained,
        "probe_images": args.probe,
        "rows": rows,
        "total_s": round(time.perf_counter() - started, 1),
    }
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
