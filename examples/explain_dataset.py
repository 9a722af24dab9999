"""Explain a whole data set shard by shard (attnscope.stream), as `attnscope explain --stream` does, and read
the shards back one at a time: memory holds one shard, whatever the size of the data set.

    PYTHONPATH=src python examples/explain_dataset.py --n 24 --out /tmp/stream-example

Run it again with --resume after interrupting it (Ctrl-C or kill -9): finished shards are kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

import attnscope as ats
from attnscope.stream import NamedData, Streaming, explain_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--out", default="runs/stream-example")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16]).eval()  # an untrained model: the mechanics, not the maps
    streaming = Streaming(args.shard_size, resume=args.resume, overwrite=args.overwrite, progress=True)
    manifest = explain_dataset(model, NamedData("clutter", args.n, seed=0), args.out, ["gradcam", "saliency"],
                               targets="label", streaming=streaming)
    mass = []
    for shard in manifest["shards"]:  # one shard in memory at a time
        maps = load_file(Path(args.out) / shard["file"])
        mass.append(maps["gradcam"].flatten(1).sum(1))
    print(f"{manifest['total']} images in {len(manifest['shards'])} shards; methods {manifest['methods']}")
    print(f"mean Grad-CAM mass per image: {float(torch.cat(mass).mean()):.4g}")
    print(json.dumps(manifest["shards"][0]))


if __name__ == "__main__":
    main()
