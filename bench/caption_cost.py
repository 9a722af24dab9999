"""What per-token maps of a caption cost: every token of a 12-token caption on captioner-tiny (64 px, the default
config) against one teacher-forced forward + backward (the physical floor), T separate calls, and captum.

Sides, each alone in a fresh process (`bench/alone.py`), CPU time (`time.process_time`), median of `--repeats`
after one warm-up:
- floor: one teacher-forced forward and one backward of the caption's summed scores to every weight (what a
  training step costs) — no map;
- to the layer: the same forward, the backward only to the encoder's tokens (weights frozen) — one gradient, no map;
- attnscope: `explain(model, image, methods, targets=Caption([caption]))`: one forward, the T gradients from one
  batched backward (`is_grads_batched`), Grad-CAM and Chefer's rule from the same pass;
- attnscope, T calls: the same maps, one `explain` per token (targets one column each);
- captum: `LayerGradientXActivation` on the same layer (the encoder's final norm), the image repeated T times
  with target t for copy t (captum's way of asking for T targets: one forward and one backward of T copies).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/caption_cost.py --repeats 5 --json bench/results/caption_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

SIDES = ("floor", "to the layer", "attnscope", "attnscope, T calls", "captum")
CAPTION = "a red three is to the left of a blue seven and a two"  # 12 words: 13 targets with <end>


def setup(methods: tuple[str, ...]):
    from attnscope import models
    from attnscope.data import DigitScenes
    from attnscope.explain.multimodal import TeacherForced, captioner

    torch.manual_seed(0)
    model = models.get("captioner-tiny", vocab=DigitScenes.vocabulary().to_json()).eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    found = captioner(model)
    ids = torch.tensor(found.encode(CAPTION))
    return model, image, TeacherForced(found, ids, "logit"), ids


def run_side(side: str, methods: tuple[str, ...]):
    import attnscope as ats
    from attnscope.explain.multimodal import Caption

    model, image, bound, ids = setup(methods)
    steps = len(ids) - 1
    if side == "floor":
        def step() -> None:
            bound(image).sum().backward()
            model.zero_grad(set_to_none=True)

        return step
    if side == "to the layer":
        bound.requires_grad_(False)
        store = []
        layer = model.encoder.norm

        def leaf(_m, _i, out: torch.Tensor) -> torch.Tensor:  # the graph starts at the layer, as attnscope's
            store.append(out.detach().requires_grad_())
            return store[-1]

        def floor() -> None:
            handle = layer.register_forward_hook(leaf)
            try:
                scores = bound(image)  # (1, T)
                torch.autograd.grad(scores.sum(), store.pop())
            finally:
                handle.remove()

        return floor
    if side == "attnscope":
        return lambda: ats.explain(model, image, list(methods), targets=Caption([CAPTION]))
    if side == "attnscope, T calls":
        return lambda: [ats.explain(bound, image, list(methods), targets=torch.tensor([[t]])) for t in range(steps)]
    from captum.attr import LayerGradientXActivation

    bound.requires_grad_(False)
    captum = LayerGradientXActivation(bound, model.encoder.norm)
    return lambda: captum.attribute(image.expand(steps, -1, -1, -1), target=list(range(steps)))


def child(args: argparse.Namespace) -> None:
    fn = run_side(args.side, tuple(args.methods.split(",")))
    fn()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    print(json.dumps({"side": args.side, "cpu_s": statistics.median(times), "times": times}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", default=None, choices=SIDES)
    p.add_argument("--methods", default="gradcam", help="attnscope's methods (captum does Grad×Activation only)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.side is not None:
        return child(args)
    from alone import fresh_row

    rows = {side: fresh_row(__file__, ["--side", side, "--methods", args.methods, "--repeats", str(args.repeats)])
            for side in SIDES}
    floor = rows["floor"]["cpu_s"]
    print(f"13 tokens of {CAPTION!r} on captioner-tiny, methods {args.methods}; CPU s (median of {args.repeats}), "
          f"load {os.getloadavg()[0]:.1f}")
    for side, row in rows.items():
        print(f"  {side:22s} {row['cpu_s'] * 1000:8.1f} ms   {row['cpu_s'] / floor:6.2f} x the floor")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "methods": args.methods,
                                               "load": os.getloadavg()[0], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
