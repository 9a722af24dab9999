"""Attention guidance against a shortcut: decoy ClutteredDigits trained with and without a guidance loss.

In the training split of `clutter-decoy` a 5x5 corner patch's colour gives the label away; in the
test split the colour is random. Each model is trained with an AttentionTracker (`FitTracker`) on 64 *training*
images (where the shortcut is there to be taken) and the per-snapshot energy of its maps in the
decoy box and in the digit's box shows when it turns to the patch or away from it.

    PYTHONPATH=src python experiments/guidance_decoy.py --out runs/guidance_decoy

writes one run folder per model (with report.html), `results.json` and `results.md`. Runs that
are complete are reused; an interrupted one is resumed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from attnscope import data, fileio
from attnscope.models import checkpoint
from attnscope.report import build
from attnscope.track import FitTracker, TrackStore
from attnscope.train import TrainConfig, fit
from attnscope.train.tasks import Classification


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/guidance_decoy")
    p.add_argument("--runs", default="none,cam:1,rrr:10,rrr:1",
                   help="guide:weight[@region] list (region: box, mask or not-decoy; default box); "
                        "'none' trains without guidance")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--probe", type=int, default=64)
    p.add_argument("--methods", default="gradcam,saliency")
    p.add_argument("--every", type=int, default=21, help="also record every N steps")
    p.add_argument("--clean-test", type=int, default=1000, help="images of clean (no decoy) test data to score")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def train(args: argparse.Namespace, spec: str) -> Path:
    """One run of `guide[:weight][@region]`, e.g. `rrr:10` (the digit's box) or `rrr:10@not-decoy`."""
    spec_, _, region = spec.partition("@")
    guide, _, weight = spec_.partition(":")
    out = Path(args.out) / spec.replace(":", "_").replace("@", "_")
    config = TrainConfig(data="clutter-decoy", n=args.n, n_test=1000, epochs=args.epochs, out=str(out), quiet=True,
                         guide=None if guide == "none" else guide, guide_weight=float(weight) if weight else None,
                         guide_region=region or "box")
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    if len(lines) < args.epochs:
        config.resume = bool(lines) or (out / "checkpoints").exists()
        tracker = (FitTracker.from_store(out / "track") if config.resume and TrackStore.exists(out / "track")
                   else FitTracker(args.methods.split(","), probe=args.probe, every=args.every, split="train"))
        started = time.perf_counter()
        fit(config, callbacks=(tracker,))
        print(f"{spec}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    build(out, title=f"guidance on decoy ClutteredDigits: {spec}")
    return out


@torch.no_grad()
def clean_accuracy(run: Path, n: int) -> float:
    """Accuracy on test images without the decoy patch (does the model read the digit?)."""
    model, _ = checkpoint.load(run)
    test = data.get("clutter", "test", n, seed=0)
    return Classification(TrainConfig()).evaluate(model.eval(), test, torch.device("cpu"), 250)["acc"]


def summarise(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    store = TrackStore.open(run / "track")
    series = [{"epoch": e["epoch"], "step": e["step"], "kind": e["kind"],
               **{k: v for k, v in e["measures"].items() if "@" in k or k == "probe_acc"}} for e in store.snapshots]
    return {
        "train_acc": metrics[-1]["train_acc"], "decoy_random_test_acc": metrics[-1]["test_acc"],
        "clean_test_acc": clean_accuracy(run, args.clean_test),
        "train_s": round(sum(r["train_time_s"] for r in metrics), 1),
        "epochs": [{k: r[k] for k in ("epoch", "train_acc", "test_acc", "train_loss") if k in r}
                   | ({"train_guide": r["train_guide"]} if "train_guide" in r else {}) for r in metrics],
        "series": series,
    }


def _cells(s: dict[str, Any], methods: list[str]) -> list[str]:
    """Per method: pointing on the decoy / on the digit, then energy in the decoy / in the digit's box."""
    return [f"{s[f'{m}/pointing@decoy']:.2f} / {s[f'{m}/pointing@box']:.2f} | "
            f"{s[f'{m}/energy_box@decoy']:.3f} / {s[f'{m}/energy_box@box']:.3f}" for m in methods]


def markdown(results: dict[str, dict[str, Any]], methods: list[str]) -> str:
    heads = " | ".join(f"{m} pointing decoy / digit | {m} energy decoy / digit" for m in methods)
    lines = ["| run | train acc (decoy informative) | test acc (decoy random) | clean test acc | " + heads + " |",
             "| --- " * (4 + 2 * len(methods)) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['train_acc']:.3f} | {r['decoy_random_test_acc']:.3f} | "
                     f"{r['clean_test_acc']:.3f} | " + " | ".join(_cells(r["series"][-1], methods)) + " |")
    for name, r in results.items():
        lines += ["", f"**{name}**: per snapshot on the 64 training-split probe images", "",
                  "| epoch | step | " + heads + " | probe acc |", "| --- " * (3 + 2 * len(methods)) + "|"]
        for s in r["series"]:
            lines.append(f"| {s['epoch']:g} | {s['step']} | " + " | ".join(_cells(s, methods))
                         + f" | {s['probe_acc']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    results = {}
    for spec in args.runs.split(","):
        results[spec] = summarise(train(args, spec), args)
        print(json.dumps({k: v for k, v in results[spec].items() if k not in ("series", "epochs")}), flush=True)
    fileio.write_json(Path(args.out) / "results.json", results)
    fileio.write_text(Path(args.out) / "results.md", markdown(results, methods))
    print(markdown(results, methods))


if __name__ == "__main__":
    main()
