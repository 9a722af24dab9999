"""The shared pass's layout: `explain` on a torchvision classifier with its pass in NHWC (the default since
2026-12-07, `attnscope.modules.nhwc_pass`) against the same call in the images' NCHW layout, each side alone in
a fresh process, the sides alternating (A/B/A/B); CPU seconds, 1 thread, the median of `--repeats` calls after
a warm-up, and the same process's plain NCHW forward (what a user's own forward costs).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/nhwc_pass.py --rounds 3 [--cases "resnet18, 1;resnet18, 2"]

The NHWC side runs NHWC at every batch; the default (`nhwc_pass`) does so only from NHWC_MIN_PIXELS, the
batch from which these rows find it faster.

Writes bench/results/nhwc_pass.json and prints one markdown row per model and methods.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from alone import fresh_row  # noqa: E402

CASES = {"resnet18, 16": ("resnet18", 16, ("gradcam",)),
         "resnet18, 16, 5 CAMs": ("resnet18", 16, ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")),
         "resnet18, 16, saliency": ("resnet18", 16, ("saliency",)),
         "resnet50, 8": ("resnet50", 8, ("gradcam",)),
         "resnet18, 1": ("resnet18", 1, ("gradcam",)),  # under NHWC_MIN_PIXELS: the default pass is NCHW
         "resnet18, 2": ("resnet18", 2, ("gradcam",)),
         "resnet18, 4": ("resnet18", 4, ("gradcam",)),
         "resnet50, 1": ("resnet50", 1, ("gradcam",))}


def child(case: str, side: str, repeats: int) -> dict:
    """One side of one case in this (fresh) process."""
    warnings.filterwarnings("ignore")
    from ladder import build

    import attnscope as ats

    name, batch, methods = CASES[case]
    model, x, classes = build(name, batch)
    # nchw: the pass in the images' own layout, as before 2026-12-07; nhwc: NHWC whatever the batch (the default
    # takes NHWC from NHWC_MIN_PIXELS only)
    importlib.import_module("attnscope.modules").NHWC_MIN_PIXELS = float("inf") if side == "nchw" else 0
    times, bases = [], []
    ats.explain(model, x, methods, targets=classes)  # warm-up
    for _ in range(repeats):
        t = time.process_time()
        with torch.no_grad():
            model(x)
        bases.append(time.process_time() - t)
        t = time.process_time()
        ats.explain(model, x, methods, targets=classes)
        times.append(time.process_time() - t)
    return {"case": case, "side": side, "seconds": statistics.median(times), "forward": statistics.median(bases)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=None, help="cases separated by ';' (default: all)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", default="nhwc", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(child(args.child, args.side, args.repeats)), flush=True)
        return
    rows = []
    print("| model, batch, methods | NHWC pass s | NCHW pass s | NCHW / NHWC | NHWC / its forward | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in args.cases.split(";") if args.cases else CASES:
        runs = [fresh_row(__file__, ["--child", case, "--side", side, "--repeats", str(args.repeats)])
                for _ in range(args.rounds) for side in ("nhwc", "nchw")]
        med = {s: statistics.median(r["seconds"] for r in runs if r["side"] == s) for s in ("nhwc", "nchw")}
        fwd = statistics.median(r["forward"] for r in runs if r["side"] == "nhwc")
        load = open("/proc/loadavg").read().split()[0]
        rows.append({"case": case, **med, "forward": fwd, "runs": runs, "load": load, "rounds": args.rounds})
        print(f"| {case} | {med['nhwc']:.3f} | {med['nchw']:.3f} | {med['nchw'] / med['nhwc']:.2f}× | "
              f"{med['nhwc'] / fwd:.2f} | {load} |", flush=True)
    path = HERE / "results" / "nhwc_pass.json"  # rows of cases not run this time are kept
    kept = [r for r in json.loads(path.read_text()) if r["case"] not in {r["case"] for r in rows}] \
        if path.exists() else []
    path.write_text(json.dumps(kept + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
