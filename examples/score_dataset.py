"""Score a whole data set shard by shard (attnscope.stream), as `attnscope bench --stream` and
`attnscope sanity --stream` do: the leaderboard and a cascading randomisation test from the shards' sums,
and one shard's per-image values read back.

    PYTHONPATH=src python examples/score_dataset.py --n 12 --out /tmp/score-example

Run it again with --resume after interrupting it (Ctrl-C or kill -9): finished shards are kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open

import attnscope as ats
from attnscope.evaluate.leaderboard import Settings
from attnscope.sanity import Comparison, Randomisation, model_randomization
from attnscope.stream import NamedData, Streaming
from attnscope.stream.bench import bench_dataset
from attnscope.stream.sanity import sanity_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--out", default="runs/score-example")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16]).eval()  # an untrained model: the mechanics, not the scores
    data, out = NamedData("clutter", args.n, seed=0), Path(args.out)
    streaming = Streaming(args.shard_size, resume=args.resume, overwrite=args.overwrite, progress=True)
    board = bench_dataset(model, data, out / "bench", ["gradcam", "saliency"],
                          metrics="pointing,deletion_zero,sparseness", settings=Settings(step=64), streaming=streaming)
    for row in board["rows"]:
        low, high, n = board["ci"][row["method"]]["pointing"]
        print(f"{row['method']:>9}: pointing {row['pointing']:.3f} (95% CI {low:.3f} … {high:.3f}, n = {n})")

    def cascading(images, labels, index, keep):
        return model_randomization(model, images, "gradcam", randomisation=Randomisation(blocks=2),
                                   comparison=Comparison(("spearman_abs",), keep=keep), index=index)

    result = sanity_dataset(data, out / "sanity", {"cascading": cascading}, keep=2, streaming=streaming)["cascading"]
    print(f"cascading: {len(result.rows())} rows, similarity after the last step "
          f"{result.value('gradcam', result.steps[-1], 'spearman_abs'):.3f}")
    with safe_open(str(out / "bench" / "shards" / "shard-00000.safetensors"), "pt") as f:
        keys = json.loads(f.metadata()["attnscope"])["keys"]
        print(f"shard 0: {f.get_tensor('values').shape[1]} images × {len(keys)} (map, column) values, e.g. {keys[0]}")


if __name__ == "__main__":
    main()
