"""Where the tracker's faithfulness measures spend their CPU, in the training process.

Trains one job of `experiments/learning_runs.py` with the study's tracker inside the training process (as
`learning_runs.py --tracked` does) and times the parts of every `CausalMeasures` call: the blank-out
reference, the part removals (with their agreement with each map), the substitution passes, and the rest
(the unperturbed pass, the scorer's copy, the first call's chunk probe). Prints CPU seconds per snapshot.

    OMP_NUM_THREADS=1 PYTHONPATH=src:experiments python bench/tracker_parts.py ltpa/decoy --seed 0

Writes nothing but its own run folder under `--out` (a temporary folder by default, removed after).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import learning_runs  # noqa: E402

from attnscope.track import causal  # noqa: E402

PARTS = {"blank-out": "_blank_out", "part removals": "_parts", "substitutions": "_substituted", "total": "__call__"}


def timed(spent: collections.Counter, name: str, fn):
    def wrapper(*args, **kwargs):
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.process_time() - started
    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("job", choices=list(learning_runs.JOBS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the run (default: a temporary one, removed after)")
    args = p.parse_args()
    torch.set_num_threads(1)
    spent: collections.Counter = collections.Counter()
    for name, attr in PARTS.items():
        setattr(causal.CausalMeasures, attr, timed(spent, name, getattr(causal.CausalMeasures, attr)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        learning_runs.train_tracked(args.job, args.seed, out / "runs", out / "results")
        record = next((out / "results").glob("*.json")).read_text()
    import json

    cost = json.loads(record)["cost"]
    n = cost["snapshots"]
    rest = spent["total"] - sum(v for k, v in spent.items() if k != "total")
    print(f"{args.job} seed {args.seed}: {n} snapshots, training {cost['train_cpu_s']} CPU s, faithfulness "
          f"{100 * cost['causal_share']:.1f} % of it")
    for name in ("blank-out", "part removals", "substitutions"):
        print(f"  {name:14s} {spent[name] / n:.3f} CPU s per snapshot")
    print(f"  {'the rest':14s} {rest / n:.3f}\n  {'all':14s} {spent['total'] / n:.3f}")


if __name__ == "__main__":
    main()
