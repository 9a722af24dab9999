"""LTPA vs a plain CNN on hard ClutteredDigits: accuracy, and how well each one's attention finds the digit.

Every model is trained by `attnscope.train.fit` (what `attnscope train` runs) with the same data,
optimiser, schedule and number of steps. Localisation is scored on the first `--n-explain` test
images against the digit's box (pointing game, energy in box) and its ink mask (Jaccard of the
binarised min–max normalised map, at a fixed threshold and at the best single threshold per method):
for LTPA the model's own attention (`explain(..., ("ltpa",))`), for the CNN its Grad-CAM.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/ltpa_clutter.py --out runs/ltpa_clutter

Results go to `<out>/results.jsonl` (one line per run, so an interrupted sweep continues where it
stopped) and `<out>/table.md` (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope import data, fileio, metrics
from attnscope.explain import explain
from attnscope.maps import AttentionMap
from attnscope.train import TrainConfig, fit
from attnscope.train.loop import Cached

# Smaller digits among twice the clutter (the default is 16–28 px digits and 6 fragments on 64 px).
HARD = {"size": 64, "digit_size": [10, 16], "n_fragments": 12}
BACKBONE = [16, 32, 64, 128, 128]  # the same conv stages for the CNN and every LTPA variant
THRESHOLDS = [f"{0.05 * i:.2f}" for i in range(1, 20)]  # JSON keys
FIXED_THRESHOLD = 0.5

# name → (model, model options, maps to score: {row name: (method, explain layer, key of the result)})
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, tuple[str, str, str]]]] = {
    "cnn": ("smallcnn", {"widths": BACKBONE},
            {"cnn grad-cam (last layer)": ("gradcam", "auto", "gradcam"),
             "cnn grad-cam (features.3.2)": ("gradcam", "features.3.2", "gradcam")}),
}
for _est in (3, 2):
    for _comp in ("pc", "dp"):
        VARIANTS[f"att{_est}-{_comp}-softmax"] = ("ltpa", {"estimators": _est, "compatibility": _comp}, {})
VARIANTS["att3-pc-sigmoid"] = ("ltpa", {"estimators": 3, "compatibility": "pc", "normalisation": "sigmoid"}, {})
# Pooling baselines (src/attnscope/models/pooling.py): is LTPA's gain attention, or how it pools?
VARIANTS["gmp-cnn"] = ("pooling-cnn", {"widths": BACKBONE, "pool": "max"},
                       {"gmp-cnn grad-cam (last layer)": ("gradcam", "auto", "gradcam"),
                        "gmp-cnn grad-cam (features.3.2)": ("gradcam", "features.3.2", "gradcam")})
VARIANTS["attention-pool"] = ("pooling-cnn", {"widths": BACKBONE[:4], "pool": "attention"}, {})  # one 8x8 head
VARIANTS["att3-pc-softmax-nog"] = ("ltpa-nog", {"estimators": 3}, {})


_CACHE: dict[tuple, Cached] = {}  # every run reuses one generation of each split


@data.register("clutter-hard")
def _clutter_hard(split: str, n: int, seed: int, **cfg: Any) -> Cached:
    key = (split, n, seed, json.dumps(cfg, sort_keys=True))
    if key not in _CACHE:
        _CACHE[key] = Cached(data.ClutteredDigits(split, n, seed=seed, **{**HARD, **cfg}))
    return _CACHE[key]


def scores(m: AttentionMap, boxes: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
    """Per-image localisation scores of a map against boxes (B, 4) and masks (B, H, W)."""
    maps, normalized = m.values, m.normalized()
    return {
        "grid": list(m.lowres.shape[-2:]) if m.lowres is not None else list(maps.shape[-2:]),
        "pointing": metrics.pointing_game(maps, boxes).tolist(),
        "energy": metrics.energy_in_box(maps, boxes).tolist(),  # (per image: the bootstrap over images reads them)
        "jaccard": {t: metrics.jaccard(normalized, masks, float(t)).tolist() for t in THRESHOLDS},
    }


def localisation(model: torch.nn.Module, name: str, test: Dataset, n: int) -> dict[str, dict[str, Any]]:
    """Scores of every map of `name`'s model on the first `n` test images."""
    samples = [test[i] for i in range(n)]
    x = torch.stack([s.image for s in samples])
    boxes = torch.stack([s.box for s in samples])
    masks = torch.stack([s.mask for s in samples])
    _, _, asked = VARIANTS[name]
    out = {}
    if getattr(model, "attention_kind", None) == "ltpa":
        for key, m in explain(model, x, ("ltpa",), batch_size=100).items():
            out[f"{name} {key}"] = scores(m, boxes, masks)
    for row, (method, layer, key) in asked.items():
        m = explain(model, x, (method,), layer=layer, batch_size=100)[key]
        out[row] = scores(m, boxes, masks)
    return out


def run_one(args: argparse.Namespace, name: str, seed: int) -> dict[str, Any]:
    model_name, model_cfg, _ = VARIANTS[name]
    config = TrainConfig(
        model=model_name, model_cfg=model_cfg, data="clutter-hard", out=str(Path(args.out) / f"{name}-s{seed}"),
        n=args.n, n_test=args.n_test, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, momentum=0.9, weight_decay=5e-4, schedule=args.schedule, step_size=args.step_size,
        gamma=args.gamma, seed=seed, data_seed=0, device="cpu", quiet=True,
    )
    shutil.rmtree(config.out, ignore_errors=True)  # a run cut short earlier: train it again from scratch
    started = time.perf_counter()
    run = fit(config)
    train_s = time.perf_counter() - started
    run.model.eval()
    maps = localisation(run.model, name, run.test_data, args.n_explain)
    last = run.history[-1]
    return {"variant": name, "seed": seed, "test_acc": last["test_acc"], "train_acc": last["train_acc"],
            "history": [h["test_acc"] for h in run.history], "train_s": train_s, "maps": maps}


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * sd:.{digits}f}"


def _per_seed(runs: list[dict[str, Any]], field: str, threshold: str | None = None) -> list[float]:
    """One mean over the scored images per run (seed) of a score of one map."""
    return [statistics.mean(r[field] if threshold is None else r[field][threshold]) for r in runs]


def summarise(results: list[dict[str, Any]]) -> str:
    """Markdown tables: accuracy per variant, localisation per map (mean ± std over seeds)."""
    lines = ["| model | seeds | test accuracy (%) | train accuracy (%) | train time (s) |", "|---|---|---|---|---|"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    for name, rs in by_variant.items():
        lines.append(f"| {name} | {len(rs)} | {_mean_std([r['test_acc'] for r in rs], 100)} | "
                     f"{_mean_std([r['train_acc'] for r in rs], 100)} | "
                     f"{statistics.mean(r['train_s'] for r in rs):.0f} |")

    rows: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        for row, s in r["maps"].items():
            rows.setdefault(row, []).append(s)
    fixed = f"{FIXED_THRESHOLD:.2f}"
    lines += ["", f"| map | grid | pointing game (%) | energy in box | Jaccard @ {fixed} | best Jaccard (threshold) |",
              "|---|---|---|---|---|---|"]
    for row, runs in rows.items():
        # The best single threshold for this map, chosen on all its images and seeds (an oracle).
        best = max(THRESHOLDS, key=lambda t: statistics.mean(_per_seed(runs, "jaccard", t)))  # noqa: B023
        lines.append(
            f"| {row} | {'×'.join(map(str, runs[0]['grid']))} | {_mean_std(_per_seed(runs, 'pointing'), 100)} | "
            f"{_mean_std(_per_seed(runs, 'energy'), 1, 3)} | "
            f"{_mean_std(_per_seed(runs, 'jaccard', fixed), 1, 3)} | "
            f"{_mean_std(_per_seed(runs, 'jaccard', best), 1, 3)} ({best}) |"
        )
    return "\n".join(lines) + "\n"


def compact(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per run: accuracy and, per map, the image-mean of each score (what the tables are made from)."""
    runs = []
    for r in results:
        maps = {row: {"grid": s["grid"], "pointing": statistics.mean(s["pointing"]),
                      "energy": statistics.mean(s["energy"]),
                      **({"per_image": {"pointing": s["pointing"], "energy": [round(e, 5) for e in s["energy"]]}}
                         if args.per_image else {}),
                      "jaccard": {t: statistics.mean(v) for t, v in s["jaccard"].items()}}
                for row, s in r["maps"].items()}
        kept = ("variant", "seed", "test_acc", "train_acc", "history", "train_s")
        runs.append({k: r[k] for k in kept} | {"maps": maps})
    return {"settings": {**vars(args), "data": HARD, "backbone": BACKBONE}, "runs": runs}


def figure(out: Path, path: str, n: int = 4) -> None:
    """Maps of the seed-0 att3-pc-softmax LTPA and the CNN's Grad-CAM on the first `n` test images."""
    from attnscope.models import checkpoint
    from attnscope.report import figures

    test = data.ClutteredDigits("test", n, seed=0, **HARD)
    x = torch.stack([test[i].image for i in range(n)])
    boxes = torch.stack([test[i].box for i in range(n)])
    ltpa_model, _ = checkpoint.load(out / "att3-pc-softmax-s0")
    cnn, _ = checkpoint.load(out / "cnn-s0")
    lt = explain(ltpa_model, x, ("ltpa",))
    columns = {f"ltpa {'x'.join(map(str, m.lowres.shape[-2:]))}": m.values for k, m in lt.items() if k != "ltpa"}
    columns["ltpa mean"] = lt["ltpa"].values
    columns["cnn gradcam 8x8"] = explain(cnn, x, ("gradcam",), layer="features.3.2")["gradcam"].values
    columns["cnn gradcam 4x4"] = explain(cnn, x, ("gradcam",))["gradcam"].values
    figures.save_png(path, figures.grid(x, columns, boxes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ltpa_clutter")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-explain", type=int, default=500)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--schedule", default="onecycle")
    p.add_argument("--step-size", type=int, default=2)
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", help="also draw maps of the seed-0 models into this PNG")
    p.add_argument("--summary", help="where the summary JSON goes (default <out>/summary.json)")
    p.add_argument("--per-image", action="store_true", help="keep every image's pointing and energy in the summary")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    results_path = out / "results.jsonl"
    results = [json.loads(s) for s in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {(r["variant"], r["seed"]) for r in results}
    fileio.write_json(out / "command.json", vars(args))
    for seed in args.seeds:
        for name in args.variants:
            if (name, seed) in done:
                continue
            started = time.perf_counter()
            record = run_one(args, name, seed)
            fileio.append_jsonl(results_path, record)
            results.append(record)
            print(f"{name} seed {seed}: test acc {record['test_acc']:.3f} (by epoch {record['history']}) "
                  f"in {time.perf_counter() - started:.0f} s", flush=True)
    table = summarise([r for r in results if r["variant"] in args.variants and r["seed"] in args.seeds])
    fileio.write_text(out / "table.md", table)
    fileio.write_json(Path(args.summary or out / "summary.json"), compact(results, args))
    print(table, flush=True)
    if args.figure:
        figure(out, args.figure)


if __name__ == "__main__":
    main()
