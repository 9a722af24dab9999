"""What glibc's returning of freed memory costs a CPU run: each workload in fresh processes, with the default
allocator settings and with freed memory kept (`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` at 4 GiB:
large tensors come from the heap and the heap is not trimmed), alternating A/B/A/B.

A forward of a CNN allocates each activation afresh; above glibc's mmap threshold (128 KiB, raised dynamically
to at most 32 MiB) that is a new mapping whose pages the kernel faults in and zeroes on first touch, and a
freed one goes back to the system. attnscope does not change the process's allocator (a library should not);
this measures what a user gains by setting the two variables for a CLI run or a training script.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/allocator.py --rounds 3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

KEEP = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**30), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}


def workload(name: str):
    """A callable doing one unit of the named work (weights random: the work, not the values, is measured)."""
    import torch
    import torchvision

    import attnscope as ats

    torch.manual_seed(0)
    if name in ("forward", "gradcam"):
        model = torchvision.models.resnet18().eval()
        x = torch.rand(16, 3, 224, 224)
        if name == "forward":
            return torch.no_grad()(lambda: model(x))
        return lambda: ats.explain(model, x, "gradcam", targets=torch.arange(16))
    if name == "faithfulness":  # one tracker snapshot's blank-out, part and base passes on SmallCNN at 64 px
        from attnscope.track import CausalMeasures, parts_from, probe_from

        data = ats.data.get("clutter-decoy", "train", 64, seed=0)
        probe, parts = probe_from(data, 64), parts_from(data, 64)
        model = ats.models.get("smallcnn", widths=[16, 32, 64, 128]).eval()
        measures = CausalMeasures(grid=4, images=32, parts=parts)
        return lambda: measures(model, probe.images, probe.labels, {}, {})
    raise SystemExit(f"unknown workload {name!r}")


def child(name: str, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    run = workload(name)
    run()  # warm-up: kernels, caches, the chunk probe
    times, faults = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"seconds": statistics.median(times), "faults": statistics.median(faults)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="forward,gradcam,faithfulness")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    print("| workload | default s | freed memory kept s | default / kept | page faults per call: default, kept |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in args.workloads.split(","):
        runs: dict[str, list[dict]] = {"default": [], "kept": []}
        for _ in range(args.rounds):
            for side in runs:
                env = {k: v for k, v in os.environ.items() if k not in KEEP} | (KEEP if side == "kept" else {})
                out = subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(args.repeats)],
                                     env=env, capture_output=True, text=True, check=True)
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        s = {side: statistics.median(r["seconds"] for r in v) for side, v in runs.items()}
        f = {side: int(statistics.median(r["faults"] for r in v)) for side, v in runs.items()}
        print(f"| {name} | {s['default']:.3f} | {s['kept']:.3f} | {s['default'] / s['kept']:.2f}× | "
              f"{f['default']:,}, {f['kept']:,} |", flush=True)
    print(f"\n{args.rounds} rounds × {args.repeats} calls per process (median), load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
