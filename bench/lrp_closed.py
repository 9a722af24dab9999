"""LRP with the closed forms of `explain.relevance_closed` against the term-by-term evaluation, per composite.

resnet18 at 224 px (the ladder's model: random weights and BatchNorm statistics), a batch of 16, one process,
one thread: for each composite, `--rounds` alternations of (term by term, closed), each the median CPU time
(`time.process_time`) of `--repeats` calls after a warm-up; then whether the two maps are equal bit for bit, and
the largest difference relative to the largest value.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/lrp_closed.py --rounds 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alone import median_cpu  # noqa: E402
from ladder import build  # noqa: E402

import attnscope as ats  # noqa: E402
from attnscope.explain import relevance_closed  # noqa: E402

COMPOSITES = ("epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--composites", default=",".join(COMPOSITES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x, targets = build("resnet18", args.batch)
    closed_form = relevance_closed.closed_form
    ways = {"term by term": lambda *_: None, "closed": closed_form}
    for composite in args.composites.split(","):
        options = {"lrp": {"composite": composite}}

        def call(options: dict = options) -> torch.Tensor:
            return ats.explain(model, x, "lrp", targets=targets, options=options)["lrp"].values

        seconds: dict[str, list[float]] = {way: [] for way in ways}
        maps = {}
        for _ in range(args.rounds):
            for way, form in ways.items():
                relevance_closed.closed_form = form
                seconds[way].append(round(median_cpu(call, args.repeats), 3))
                maps[way] = call()
        relevance_closed.closed_form = closed_form
        print(json.dumps({"composite": composite, "cpu_s": seconds,
                          "speedup": round(statistics.median(seconds["term by term"])
                                           / statistics.median(seconds["closed"]), 2),
                          "equal": bool(torch.equal(maps["term by term"], maps["closed"])),
                          "max_relative_difference": float((maps["closed"] - maps["term by term"]).abs().max()
                                                           / maps["term by term"].abs().max())}), flush=True)


if __name__ == "__main__":
    main()
