"""Cost of `chefer` and `attnlrp` on a ViT-S at 224 px, batch 16, against a forward + backward, lxt and the
Transformer-Explainability reference — CPU time, each side alone in a fresh process (`bench/alone.py`).

Sides (all on the ViT-S/16 architecture: 12 blocks, 6 heads, width 384, random weights, 16 images):
- `fwd+bwd`: the floor — torchvision's `VisionTransformer` forward and the backward of the 16 target scores to
  the input, parameters frozen (what any input-gradient method costs);
- `attnlrp`, `attnlrp-cp`, `chefer`: `attnscope.explain` on that model (AttnLRP's uniform rule, CP-LRP inside
  attention, Chefer et al.'s transformer attribution);
- `lxt-cp`: lxt 2.1's CP-LRP patches for torchvision's ViT (`lxt.efficient.models.vit_torch.cp_LRP`), then x ⊙ ∂y/∂x;
- `te-chefer`: Transformer-Explainability's own ViT (`baselines/ViT/ViT_LRP.py`, width 384, depth 12, 6 heads)
  and its `generate_LRP` steps (forward, one-hot backward, `relprop(method="transformer_attribution")`); its
  relprop reads one image (a batch gives one map), so it runs image by image, as its README uses it.
  Its code is not part of attnscope: pass `--te DIR`, a checkout of hila-chefer/Transformer-Explainability
  outside this repository (it needs `einops`).

Each side: one warm-up call, then the median CPU time (`time.process_time`) of `--repeats` calls.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/transformer_relevance.py --alone --te /tmp/te --repeats 3

prints one JSON line per side and the ratios to `fwd+bwd` (results go to bench/README.md by hand).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

SIDES = ("fwd+bwd", "attnlrp", "attnlrp-cp", "chefer", "lxt-cp", "te-chefer")


def vit_s() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(224, 16, 12, 6, 384, 1536, num_classes=1000).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    return model


def side(name: str, x: torch.Tensor, targets: torch.Tensor, te: str | None) -> Callable[[], object]:
    """The call timed for one side (built once, outside the timing)."""
    if name == "te-chefer":
        return te_chefer(x, targets, te)
    model = vit_s()
    if name == "fwd+bwd":
        for p in model.parameters():
            p.requires_grad_(False)

        def floor() -> torch.Tensor:
            inputs = x.clone().requires_grad_()
            model(inputs).gather(1, targets[:, None]).sum().backward()
            return inputs.grad

        return floor
    if name == "lxt-cp":
        return lxt_cp(model, x, targets)
    import attnscope as ats

    method, options = {"attnlrp": ("attnlrp", {}), "attnlrp-cp": ("attnlrp", {"attention": "cp"}),
                       "chefer": ("chefer", {})}[name]
    return lambda: ats.explain(model, x, method, targets=targets, options={method: options} if options else None)


def lxt_cp(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> Callable[[], torch.Tensor]:
    """lxt's patches (loaded without its package __init__, which imports model files transformers 5 lacks)."""
    import importlib.util
    import os
    import types

    base = os.path.dirname(importlib.util.find_spec("lxt").origin)
    for package in ("lxt", "lxt.efficient", "lxt.efficient.models"):
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(base, *package.split(".")[1:])]
        sys.modules[package] = module
    from lxt.efficient.models.vit_torch import cp_LRP

    for cls, patch in cp_LRP.items():  # lxt patches torch's classes for the whole (child) process
        patch(cls)
    for p in model.parameters():
        p.requires_grad_(False)

    def run() -> torch.Tensor:
        inputs = x.clone().requires_grad_()
        model(inputs).gather(1, targets[:, None]).sum().backward()
        return (inputs * inputs.grad).sum(dim=1)

    return run


def te_chefer(x: torch.Tensor, targets: torch.Tensor, te: str | None) -> Callable[[], list[torch.Tensor]]:
    if te is None or not (Path(te) / "baselines" / "ViT" / "ViT_LRP.py").exists():
        raise SystemExit("te-chefer needs --te DIR, a checkout of hila-chefer/Transformer-Explainability")
    sys.path.insert(0, te)
    from baselines.ViT.ViT_LRP import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True).eval()

    def run() -> list[torch.Tensor]:
        maps = []
        for i in range(x.shape[0]):  # generate_LRP's steps, without its .cuda() calls
            output = model(x[i : i + 1])
            one_hot = torch.zeros(1, output.shape[-1])
            one_hot[0, targets[i]] = 1
            model.zero_grad()
            (one_hot * output).sum().backward(retain_graph=True)
            maps.append(model.relprop(one_hot, method="transformer_attribution", alpha=1).detach())
        return maps

    return run


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    x = torch.rand(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(args.images) % 1000
    run = side(args.side, x, targets, args.te)
    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    print(json.dumps({"side": args.side, "cpu_s": statistics.median(times), "runs": times,
                      "images": args.images}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, default=None, help="run one side in this process")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--alone", action="store_true", help="every side in its own fresh process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--te", default=None, help="a checkout of hila-chefer/Transformer-Explainability")
    args = parser.parse_args()
    if args.side is not None:
        return child(args)
    if not args.alone:
        raise SystemExit("pass --alone (every side in a fresh process) or --side NAME")
    sys.path.insert(0, str(Path(__file__).parent))
    from alone import fresh_row

    rows = []
    for name in args.sides.split(","):
        argv = ["--side", name, "--repeats", str(args.repeats), "--images", str(args.images)]
        rows.append(fresh_row(__file__, argv + (["--te", args.te] if args.te else [])))
        print(json.dumps(rows[-1]), flush=True)
    floor = next((r["cpu_s"] for r in rows if r["side"] == "fwd+bwd"), None)
    if floor:
        for r in rows:
            print(f"{r['side']:>12}: {r['cpu_s']:8.2f} CPU s  {r['cpu_s'] / floor:5.2f} × fwd+bwd")


if __name__ == "__main__":
    main()
