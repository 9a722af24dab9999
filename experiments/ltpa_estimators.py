"""Why do LTPA's finer attention estimators (32×32, 16×16) not localise? Short screens of the hypotheses
that docs/ltpa.md raises, on ClutteredDigits (default: 16–28 px digits, 6 fragments, 64 px).

Each variant changes one thing of att3-pc-softmax trained as in `ltpa_clutter.py` (2,000 images, 8 epochs,
AdamW 3e-3 one-cycle, weight decay 5e-4, batch 64):
- `pc` under softmax ignores g (⟨u, g⟩ is a bias that cancels), so an estimator scores local features alone:
  `sigmoid` (where the bias does not cancel), `dp-scaled` (⟨l, g⟩/√D: the score depends on g), and
  `dp-scaled, avg g` (g from average instead of max pooling — only matters where g does);
- the classifier needs only one good estimator: `indep` heads (each g_a must classify on its own, the
  authors' pred-ensemble);
- training length: `24 epochs`;
- the paper's SGD recipe (momentum 0.9, weight decay 5e-4, lr 0.1 halved in steps) for 24 epochs, at 64 px —
  the grids 32/16/8 of the paper's CIFAR models — and at 96 px.

Scores per map on the first `--n-explain` test images: pointing game and energy in the digit's box. One JSON
per (variant, seed) in `--results`, written when the run is scored and skipped when present; an interrupted
run resumes from its last epoch.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/ltpa_estimators.py --variants base indep --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from attnscope import fileio, metrics
from attnscope.explain import explain
from attnscope.train import TrainConfig, fit

DEFAULT = {"size": 64}  # ClutteredDigits' defaults: 16–28 px digits, 6 fragments of 8 px
LARGE = {"size": 96, "digit_size": [24, 42], "fragment_size": 12}  # the same scene at 1.5 × the resolution
ADAMW = {"optimizer": "adamw", "lr": 3e-3, "schedule": "onecycle", "epochs": 8}
SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "step", "step_size": 8, "gamma": 0.5, "epochs": 24}

# name → (model options, training options, data options)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "base": ({}, ADAMW, DEFAULT),
    "sigmoid": ({"normalisation": "sigmoid"}, ADAMW, DEFAULT),
    "dp-scaled": ({"compatibility": "dp-scaled"}, ADAMW, DEFAULT),
    "dp-scaled, avg g": ({"compatibility": "dp-scaled", "global_pool": "avg"}, ADAMW, DEFAULT),
    "indep": ({"head": "indep"}, ADAMW, DEFAULT),
    "dp-scaled, avg g, indep": ({"compatibility": "dp-scaled", "global_pool": "avg", "head": "indep"}, ADAMW, DEFAULT),
    "24 epochs": ({}, {**ADAMW, "epochs": 24}, DEFAULT),
    "sgd": ({}, SGD, DEFAULT),
    "sgd, 96 px": ({}, SGD, LARGE),
}


def run(args: argparse.Namespace, name: str, seed: int) -> dict[str, Any]:
    """Train (or finish training) one variant and score every map of its attention."""
    model_cfg, train, scene = VARIANTS[name]
    out = Path(args.out) / f"{_slug(name)}-s{seed}"
    config = TrainConfig(
        model="ltpa", model_cfg={"estimators": 3, **model_cfg}, data="clutter", data_cfg=scene, out=str(out),
        n=args.n, n_test=args.n_test, batch_size=64, weight_decay=5e-4, seed=seed, data_seed=0, device="cpu",
        quiet=True, resume=(out / "config.json").exists(), **train,
    )
    started = time.perf_counter()
    result = fit(config)
    model = result.model.eval()
    samples = [result.test_data[i] for i in range(args.n_explain)]
    x = torch.stack([s.image for s in samples])
    boxes = torch.stack([s.box for s in samples])
    maps = {}
    for key, m in explain(model, x, ("ltpa",), batch_size=100).items():
        grid = "x".join(map(str, m.lowres.shape[-2:])) if m.lowres is not None else "input"
        maps[key] = {"grid": grid, "pointing": float(metrics.pointing_game(m.values, boxes).float().mean()),
                     "energy": float(metrics.energy_in_box(m.values, boxes).mean())}
    last = result.history[-1]
    return {"variant": name, "seed": seed, "test_acc": last["test_acc"], "train_acc": last["train_acc"],
            "history": [h["test_acc"] for h in result.history], "wall_s": time.perf_counter() - started,
            "config": config.to_dict(), "maps": maps}


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: accuracy and every estimator's pointing and energy, mean ± std over seeds."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    fmt = lambda v, k=1.0: f"{k * statistics.mean(v):.2f}" + (f" ± {k * statistics.stdev(v):.2f}" if len(v) > 1 else "")  # noqa: E731
    keys = ["ltpa/stages.1", "ltpa/stages.2", "ltpa/stages.3", "ltpa"]
    head = " | ".join(f"{k.split('/')[-1]} pointing | {k.split('/')[-1]} energy" for k in keys)
    lines = [f"| variant | seeds | test acc | {head} |", "| --- " * (3 + 2 * len(keys)) + "|"]
    for name in (n for n in VARIANTS if n in by):
        rs = by[name]
        cells = [fmt([r["test_acc"] for r in rs], 100)]
        for k in keys:
            cells += [fmt([r["maps"][k]["pointing"] for r in rs], 100), fmt([r["maps"][k]["energy"] for r in rs])]
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ltpa_estimators")
    p.add_argument("--results", default="experiments/results/ltpa_estimators")
    p.add_argument("--variants", nargs="+", default=["base"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-explain", type=int, default=500)
    args = p.parse_args()
    torch.set_num_threads(1)
    results_dir = Path(args.results)
    for seed in args.seeds:
        for name in args.variants:
            path = results_dir / f"{_slug(name)}-s{seed}.json"
            if path.exists():
                continue
            record = {"command": vars(args), **run(args, name, seed)}
            fileio.write_json(path, record)
            print(name, seed, f"acc {record['test_acc']:.3f}",
                  {k: (round(m["pointing"], 2), round(m["energy"], 3)) for k, m in record["maps"].items()}, flush=True)
    text = table([json.loads(f.read_text()) for f in sorted(results_dir.glob("*.json"))])
    fileio.write_text(results_dir / "table.md", text)
    print(text, flush=True)


def _slug(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "_")


if __name__ == "__main__":
    main()
