"""TinySwin on ClutteredDigits: how well its windowed attention maps point at the digit, over seeds.

A small Swin (`attnscope.models.swin`: 16 × 16 tokens in 4 × 4 shifted windows, then 8 × 8, then 4 × 4)
is trained by the library's own loop (what `attnscope train --model swin --data clutter --lr 1e-3
--weight-decay 0.05 --model-opt stochastic_depth=0` runs) for each seed; then the maps of each method,
for the true class, on the first `--probe` test images are scored
against the digit's box — pointing game and energy in box, raw and min–max normalised — as
`experiments/vit_clutter.py` scores TinyViT. Windowed maps are composed on the image grid by the rule of
`explain/windowed.py` (docs/vit.md). Each seed's rows and the mean with a 95 % t-interval over seeds go
to `summary.json` / `summary.md` in `--out`; rerunning reuses finished training runs.

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 5 python experiments/swin_clutter.py --out runs/swin_clutter \\
        --seeds 0,1,2 --n 10000 --epochs 12 --lr 1e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from vit_clutter import score  # the same rows and columns as TinyViT's table

from attnscope import data, fileio, stats
from attnscope.models import checkpoint
from attnscope.train import TrainConfig, fit

METHODS = {
    "attention": ("attention", {}),
    "rollout": ("rollout", {}),
    "grad-rollout": ("grad-rollout", {}),
    "chefer": ("chefer", {}),
    "attnlrp": ("attnlrp", {}),
    "attnlrp (cp)": ("attnlrp", {"attention": "cp"}),
    "legrad": ("legrad", {}),
    "gradcam (norm)": ("gradcam", {}),
}


def train(seed: int, out: Path, args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """Train TinySwin for `seed` (or reuse a finished run in `out`); the model and its last metrics."""
    metrics = out / "metrics.jsonl"
    if not (metrics.exists() and len(metrics.read_text().splitlines()) >= args.epochs):
        config = TrainConfig(model="swin", data="clutter", out=str(out), n=args.n, n_test=args.n_test,
                             epochs=args.epochs, batch_size=64, seed=seed, quiet=True, lr=args.lr, weight_decay=0.05,
                             model_cfg={"stochastic_depth": 0.0}, resume=(out / "checkpoints").exists())
        fit(config)
    net, _ = checkpoint.load(out)
    return net.eval(), json.loads(metrics.read_text().splitlines()[-1])


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (`attnscope.stats.t_interval`; 0 for one value)."""
    interval = stats.t_interval(values)
    return interval.mean, 0.0 if interval.n < 2 else (interval.high - interval.low) / 2


def summarise(per_seed: dict[int, dict]) -> list[dict]:
    """Per method: the mean ± 95 % t half-width over seeds of each column, and a paired t-test over seeds of its
    pointing game against the random map's (`attnscope.stats.paired_t`)."""
    methods = [r["method"] for r in next(iter(per_seed.values()))["rows"]]
    of = lambda method, key: [next(r[key] for r in s["rows"] if r["method"] == method)  # noqa: E731
                              for s in per_seed.values()]
    rows = []
    for method in methods:
        row = {"method": method}
        for key in ("pointing", "energy_in_box", "energy_in_box_normalized", "ms_per_image"):
            row[key] = mean_ci(of(method, key))
        if method != "random" and len(per_seed) > 1:
            test = stats.paired_t(of(method, "pointing"), of("random", "pointing"))
            row["pointing_vs_random"] = {"test": test.name, "p": test.p, "n": test.n, "difference": test.effect}
        rows.append(row)
    return rows


def markdown(summary: dict) -> str:
    accs = ", ".join(f"{s['test_acc']:.3f}" for s in summary["seeds"].values())
    lines = [f"TinySwin, seeds {', '.join(map(str, summary['seeds']))} (test accuracy {accs}); mean ± 95 % CI "
             "over seeds", "",
             "| method | pointing game | energy in box | energy in box (min–max) | ms / image | pointing − random, "
             "paired t over seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in summary["rows"]:
        keys = ("pointing", "energy_in_box", "energy_in_box_normalized")
        cells = [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" for k in keys]
        vs = row.get("pointing_vs_random")
        test = f"{vs['difference']:+.3f}, {stats.p_text(vs['p'])}" if vs else "–"
        lines.append(f"| {row['method']} | {' | '.join(cells)} | {row['ms_per_image'][0]:.1f} | {test} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/swin_clutter")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--probe", type=int, default=300)
    parser.add_argument("--train-only", action="store_true", help="train the seeds, score nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.perf_counter()
    test = data.get("clutter", "test", args.probe, seed=0)
    samples = [test[i] for i in range(args.probe)]
    images = torch.stack([s.image for s in samples])  # (N, 3, 64, 64)
    labels = torch.tensor([int(s.label) for s in samples])
    boxes = torch.stack([s.box for s in samples])  # (N, 4)
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        model, last = train(seed, out / f"seed{seed}", args)
        if args.train_only:
            continue
        per_seed[seed] = {"test_acc": last.get("test_acc", float("nan")),
                          "rows": score(model, METHODS, images, labels, boxes, calibration=("random",))}
        print(f"seed {seed}: test accuracy {per_seed[seed]['test_acc']:.3f}", flush=True)
    if args.train_only:
        return
    summary = {"command": "experiments/swin_clutter.py", "args": vars(args), "seeds": per_seed,
               "rows": summarise(per_seed), "seconds": round(time.perf_counter() - started, 1)}
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
