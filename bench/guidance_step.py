"""What a guidance loss costs per training step: forward + loss + backward + optimizer step of SmallCNN on
a batch of 64 ClutteredDigits images, without guidance and with each registered guide, interleaved in one
process (median of repeats), reported as ratios to the unguided step.

    PYTHONPATH=src python bench/guidance_step.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from attnscope import data, models
from attnscope.guide import GUIDES
from attnscope.train import TrainConfig
from attnscope.train.tasks import Classification


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = data.get("clutter-decoy", "train", args.batch)
    batch = torch.utils.data.default_collate([ds[i] for i in range(args.batch)])
    model = models.get("smallcnn", num_classes=10).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    guides = [None] + [g for g in GUIDES if GUIDES.get(g).applies(model) is None]
    tasks = {g: Classification(TrainConfig(guide=g)) for g in guides}
    times: dict[str | None, list[float]] = {g: [] for g in guides}
    for _ in range(args.repeats + 1):  # the first round warms up
        for g, task in tasks.items():
            started = time.perf_counter()
            loss, _ = task.loss(model, batch, torch.device("cpu"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times[g].append(time.perf_counter() - started)
    median = {g: statistics.median(t[1:]) for g, t in times.items()}
    result = {"batch": args.batch, "threads": args.threads,
              "step_s": {str(g or "none"): round(s, 4) for g, s in median.items()},
              "ratio_to_unguided": {str(g or "none"): round(s / median[None], 2) for g, s in median.items()}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
