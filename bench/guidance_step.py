"""What a guidance loss costs per training step: forward + loss + backward + optimizer step of SmallCNN on
a batch of 64 ClutteredDigits images, without guidance and with each registered guide, interleaved in one
process (median of repeats), reported as ratios to the unguided step.

    PYTHONPATH=src python bench/guidance_step.py

`--alone` times each guide in its own fresh process (`--only GUIDE` in a child), interleaved with that
process's own unguided step, which is its base; `--clock cpu` (the default with `--alone`) measures this
process's CPU time instead of wall time, which on a shared machine mostly measures the other jobs:

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/guidance_step.py --alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from alone import fresh_row

from attnscope import data, models
from attnscope.guide import GUIDES
from attnscope.train import TrainConfig
from attnscope.train.tasks import Classification

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def step_times(guides: list[str | None], batch_size: int, repeats: int, clock: str) -> dict[str | None, float]:
    """Median seconds of one training step per guide (None: unguided), the guides interleaved in each round."""
    ds = data.get("clutter-decoy", "train", batch_size)
    batch = torch.utils.data.default_collate([ds[i] for i in range(batch_size)])
    model = models.get("smallcnn", num_classes=10).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tasks = {g: Classification(TrainConfig(guide=g)) for g in guides}
    times: dict[str | None, list[float]] = {g: [] for g in guides}
    now = CLOCKS[clock]
    for _ in range(repeats + 1):  # the first round warms up
        for g, task in tasks.items():
            started = now()
            loss, _ = task.loss(model, batch, torch.device("cpu"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times[g].append(now() - started)
    return {g: statistics.median(t[1:]) for g, t in times.items()}


def applicable() -> list[str]:
    """The registered guides that apply to the SmallCNN."""
    model = models.get("smallcnn", num_classes=10)
    return [g for g in GUIDES if GUIDES.get(g).applies(model) is None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=tuple(CLOCKS), default=None, help="wall (default) or cpu (default --alone)")
    p.add_argument("--alone", action="store_true", help="each guide in its own fresh process")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)  # a child of --alone: this guide and unguided
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.alone or args.only else "wall")
    if args.alone:
        argv = ["--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads),
                "--clock", clock]
        rows = [fresh_row(__file__, [*argv, "--only", g]) for g in applicable()]
        print(json.dumps({"batch": args.batch, "threads": args.threads, "clock": clock, "alone": True,
                          "rows": rows}, indent=2))
        return
    guides = [None, args.only] if args.only else [None, *applicable()]
    median = step_times(guides, args.batch, args.repeats, clock)
    if args.only:
        print(json.dumps({"guide": args.only, "step_s": round(median[args.only], 4),
                          "unguided_s": round(median[None], 4), "ratio": round(median[args.only] / median[None], 2)}))
        return
    result = {"batch": args.batch, "threads": args.threads, "clock": clock,
              "step_s": {str(g or "none"): round(s, 4) for g, s in median.items()},
              "ratio_to_unguided": {str(g or "none"): round(s / median[None], 2) for g, s in median.items()}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
