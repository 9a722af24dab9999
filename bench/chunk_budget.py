"""Chunk sizes of the re-running methods: CPU time and minor page faults against the chunk, and
Ablation-CAM's cost against one forward — each setting alone in a fresh process.

Part "chunks": 2,048 masked forwards of a SmallCNN (64 px, random weights) — what Score-CAM and RISE
send through the model — at fixed chunks and at the chunk `explain.budget` picks; then IG's forward +
backward passes on resnet18 (224 px, 2 images × 16 steps) the same way. Reports `time.process_time`
(CPU time; this machine is shared, wall time is noise) and `ru_minflt` of the timed part only.
Part "ablation": Ablation-CAM at resnet18 `layer4` (1 image, 224 px) with tail="split" (only the layers
after the layer run, on the shared pass's activations) and tail="shared" (the layers before re-run per
chunk), as a ratio to one plain forward of the same image, timed in the same process after a warm-up.

Part "sizes": per-input CPU time of forward and forward + backward chunks of 1 … 64 inputs on resnet18 (224 px)
or a SmallCNN (64 px), both layouts, with the bytes of the fastest and the probe's pick (`explain.budget`).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/chunk_budget.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/chunk_budget.py --part sizes --model resnet18
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from alone import fresh_row, median_cpu


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def masked_forwards(chunk: int | None) -> dict:
    """2,048 masked SmallCNN forwards at `chunk` (None: the budget's) under no_grad."""
    import attnscope as ats
    from attnscope.explain import budget

    torch.manual_seed(0)
    model = ats.models.get("smallcnn").eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64)
    cost = budget.input_cost(model, (3, 64, 64), torch.float32)
    chunk = budget.chunk_size(cost, torch.device("cpu"), chunk, 2048, grad=False)
    masks = torch.rand(2048, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x * masks[:chunk])  # warm-up
        f0, t0 = _faults(), time.process_time()
        for s in range(0, 2048, chunk):
            model((x * masks[s : s + chunk]).contiguous(memory_format=torch.channels_last))
        t, f = time.process_time() - t0, _faults() - f0
    return {"chunk": chunk, "cost_per_input_MiB": round(cost / 2**20, 2), "cpu_s": round(t, 2), "minor_faults": f}


def ig_passes(chunk: int | None) -> dict:
    """IG's 2 × 16 forward + backward passes on resnet18 224 px at `chunk` (None: the budget's)."""
    import torchvision

    import attnscope as ats

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 224, 224)
    opts = {"ig": {"steps": 16, "batch_size": chunk}}
    ats.explain(model, x[:1], "ig", targets=0, options={"ig": {"steps": 2, "batch_size": chunk}})  # warm-up
    f0, t0 = _faults(), time.process_time()
    ats.explain(model, x, "ig", targets=0, options=opts)
    t, f = time.process_time() - t0, _faults() - f0
    from attnscope.explain import budget

    cost = budget.input_cost(model, (3, 224, 224), torch.float32)
    used = budget.chunk_size(cost, torch.device("cpu"), chunk, 32, grad=True)
    return {"chunk": used, "cost_per_input_MiB": round(cost / 2**20, 2), "cpu_s": round(t, 2), "minor_faults": f}


def ablation(repeats: int) -> dict:
    """Ablation-CAM at resnet18 layer4 (tail split / shared) over one plain forward, CPU time, median."""
    import torchvision

    import attnscope as ats

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)

    with torch.no_grad():
        forward = median_cpu(lambda: model(x), repeats)
    out = {"forward_s": round(forward, 3)}
    for tail in ("split", "shared"):
        t = median_cpu(lambda tail=tail: ats.explain(model, x, "ablationcam", targets=0, layer="layer4",
                                                     options={"ablationcam": {"tail": tail}}), repeats)
        out[f"ablationcam_{tail}_x_forward"] = round(t / forward, 2)
    return out


def sizes(model_name: str) -> dict:
    """Per-input CPU seconds of forward-only chunks (masked forwards, both layouts) and of forward + backward
    chunks (IG's points) at 1 … 64 inputs, with each chunk's bytes by the budget's estimate, and the chunk the
    probe of `explain.budget` picks — what the CPU budget (a bound; the probe picks within it) rests on."""
    import attnscope as ats
    from attnscope.explain import budget
    from attnscope.modules import as_nhwc

    torch.manual_seed(0)
    size = 224 if model_name.startswith("resnet") else 64
    model = ats.models.get(model_name).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, size, size)
    cost = budget.input_cost(model, (3, size, size), torch.float32)
    out = {"model": model_name, "size": size, "MiB_per_input": round(cost / 2**20, 2)}

    def forward(n: int, nhwc: bool) -> None:
        t = x.expand(n, -1, -1, -1).clone()
        with torch.no_grad():
            model(as_nhwc(t) if nhwc else t)

    def forward_backward(n: int, nhwc: bool) -> None:
        t = x.expand(n, -1, -1, -1).clone()
        t = (as_nhwc(t) if nhwc else t).requires_grad_()
        torch.autograd.grad(model(t)[:, 0].sum(), t)

    for kind, run in (("forward", forward), ("forward_backward", forward_backward)):
        for nhwc in (False, True):
            per = {}
            for n in (1, 2, 4, 8, 16, 32, 64):
                run(n, nhwc)  # warm-up of the shape
                t0 = time.process_time()
                for _ in range(max(1, 64 // n)):
                    run(n, nhwc)
                per[n] = (time.process_time() - t0) / (max(1, 64 // n) * n)
            best = min(per, key=per.get)
            layout = "nhwc" if nhwc else "nchw"
            out[f"{kind}_{layout}_ms"] = {n: round(v * 1e3, 2) for n, v in per.items()}
            nbytes = best * cost * (1 + (kind != "forward"))
            out[f"{kind}_{layout}_best"] = {"chunk": best, "MiB": round(nbytes / 2**20)}
            probe = budget.Probe(f"bench-{kind}-{layout}", lambda n, run=run, nhwc=nhwc: run(n, nhwc))
            out[f"{kind}_{layout}_probe"] = budget.probed_chunk(model, cost, torch.device("cpu"), None, 1000,
                                                                kind != "forward", ("bench",), probe)
    return out


PARTS = {"masked": masked_forwards, "ig": ig_passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["chunks", "ablation", "masked", "ig", "sizes"], default=None)
    parser.add_argument("--model", default="resnet18", help="part sizes: resnet18 (224 px) or smallcnn (64 px)")
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "sizes":
        print(json.dumps(sizes(args.model)))
        return
    if args.part in PARTS:  # one setting, in this (fresh) process
        print(json.dumps(PARTS[args.part](args.chunk)))
        return
    if args.part in (None, "chunks"):
        for part, chunks in (("masked", (4, 16, 32, 64, 128, None)), ("ig", (1, 4, 16, 32, None))):
            for chunk in chunks:
                row = fresh_row(__file__, ["--part", part] + ([] if chunk is None else ["--chunk", str(chunk)]))
                print(json.dumps({"part": part, "asked": chunk or "budget", **row}), flush=True)
    if args.part in (None, "ablation"):
        print(json.dumps({"part": "ablation", **ablation(args.repeats)}), flush=True)


if __name__ == "__main__":
    main()
