"""GPU checks for a session that has one (not run yet: no GPU has been lent to this project's sessions).

Run on a CUDA machine; it prints one JSON line per check and exits 1 if a check fails:
1. every method that applies to a SmallCNN and a TinyViT runs with the model on `cuda`, and its maps equal
   the CPU's (fp32, to float rounding: TF32 is switched off for the comparison);
2. bf16 and fp16 autocast on `cuda` against fp32 on `cuda`, with the bounds of tests/test_autocast.py;
3. host synchronisations during a Grad-CAM call (`torch.cuda.set_sync_debug_mode("warn")` counts them);
4. the memory budget's chunk for IG on resnet50 224 px and the peak memory of that call;
5. timings (CUDA events, median of 5, after warm-up) on resnet18 224 px, batch 64: plain forward,
   the five gradient CAMs in one call, IG 32 steps; printed as ratios to the forward (and IG to its floor,
   32 forward + backward).

    PYTHONPATH=src python bench/gpu_checks.py
"""

from __future__ import annotations

import json
import statistics
import sys
import warnings

import torch

import attnscope as ats

CAMS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
FAST = {"ig": {"steps": 8}, "smoothgrad": {"n": 4}, "rise": {"n": 64}, "extremal": {"steps": 5},
        "sscam": {"n": 2}, "iscam": {"n": 2}, "gradientshap": {"n": 4}, "deepliftshap": {"n_references": 2},
        "occlusion": {"window": 8, "stride": 8}}
failed = []


def report(check: str, ok: bool, **values) -> None:
    print(json.dumps({"check": check, "ok": ok, **values}), flush=True)
    if not ok:
        failed.append(check)


def same_maps_as_cpu(model: torch.nn.Module, x: torch.Tensor) -> None:
    from attnscope.explain import list_methods
    from attnscope.explain.api import method_spec

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    gpu = model.to("cuda")
    for name in list_methods():
        if method_spec(name).applies(model) is not None or name == "sat":
            continue
        opts = {name: FAST[name]} if name in FAST else None
        ref = ats.explain(model.cpu(), x, name, targets=1, options=opts)[name].values
        got = ats.explain(gpu.cuda(), x.cuda(), name, targets=1, options=opts)[name].values
        err = float((got.cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        report(f"cuda == cpu: {type(model).__name__} {name}", err < 1e-3, rel_max_err=err, device=str(got.device))


def autocast_bounds(model: torch.nn.Module, x: torch.Tensor) -> None:
    sys.path.insert(0, "tests")
    from test_autocast import CNN, VIT, _centred_cos

    table = VIT if "ViT" in type(model).__name__ else CNN
    model, x = model.cuda(), x.cuda()
    for dtype in (torch.bfloat16, torch.float16):
        for name, (how, bound) in table.items():
            opts = {name: FAST[name]} if name in FAST else None
            ref = ats.explain(model, x, name, targets=1, options=opts)[name].values
            with torch.autocast("cuda", dtype=dtype):
                got = ats.explain(model, x, name, targets=1, options=opts)[name].values
            err = (float((got - ref).abs().max() / ref.abs().max()) if how == "max" else 1 - _centred_cos(got, ref))
            report(f"autocast {dtype} {name}", err < bound, err=err, bound=bound, how=how)


def host_syncs() -> None:
    import torchvision

    model, x = torchvision.models.resnet18().eval().cuda(), torch.rand(8, 3, 224, 224, device="cuda")
    ats.explain(model, x, CAMS, layer="layer4")
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ats.explain(model, x, CAMS, layer="layer4")
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    report("host syncs in one call of five CAMs", True, count=len(syncs), first=syncs[:3])


def budget_on_gpu() -> None:
    import torchvision

    from attnscope.explain import budget

    model = torchvision.models.resnet50().eval().cuda()
    x = torch.rand(4, 3, 224, 224, device="cuda")
    cost = budget.input_cost(model, (3, 224, 224), torch.float32)
    chunk = budget.chunk_size(cost, torch.device("cuda"), None, 4 * 50, grad=True)
    torch.cuda.reset_peak_memory_stats()
    ats.explain(model, x, "ig", targets=0)
    report("IG resnet50 budget chunk", True, chunk=chunk, cost_MiB=cost / 2**20,
           peak_GiB=torch.cuda.max_memory_allocated() / 2**30)


def timed(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def timings() -> None:
    import torchvision

    model, x = torchvision.models.resnet18().eval().cuda(), torch.rand(64, 3, 224, 224, device="cuda")

    def backward():
        y = x.clone().requires_grad_(True)
        torch.autograd.grad(model(y).max(dim=1).values.sum(), y)

    with torch.no_grad():
        forward = timed(lambda: model(x))
    fb = timed(backward)
    cams = timed(lambda: ats.explain(model, x, CAMS, layer="layer4"))
    ig = timed(lambda: ats.explain(model, x[:8], "ig", options={"ig": {"steps": 32}}), repeats=3)
    report("timings resnet18 224 px", True, device=torch.cuda.get_device_name(), forward_s=forward,
           cams_throughput_vs_forward=forward / cams, ig_vs_floor=ig / (32 * fb * 8 / 64))


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: these checks need a GPU", file=sys.stderr)
        sys.exit(2)
    torch.manual_seed(0)
    cnn = ats.models.get("smallcnn", widths=[8, 16]).eval()
    vit = ats.models.get("vit", image_size=32, patch_size=8, dim=32, depth=2, num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for model in (cnn, vit):
        same_maps_as_cpu(model, x)
        autocast_bounds(model, x)
    host_syncs()
    budget_on_gpu()
    timings()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
