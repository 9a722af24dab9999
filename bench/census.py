"""The pass census and the floor, shared by the benches against Quantus (`--floor`).

`Census(model)` records every forward of the model (its batch items, with or without gradients) and
every backward through its output (batch items), from hooks on the model that survive `deepcopy` (plain
closures, so Quantus' randomised copies count too). `unit_costs` measures the CPU seconds per image of a
forward (no gradients) and of a forward + backward to the input (the parameters frozen: a map needs no
parameter gradient) at the best chunk and layout on the model. A metric's floor is the passes its
definition requires (each bench derives them from its settings, `Required`) times these unit costs:
no implementation that computes those passes one full forward at a time can go below it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from attnscope.modules import as_nhwc


@dataclass
class Passes:
    """Batch items that went through the model: forwards without and with gradients, and backwards."""

    forward: int = 0
    forward_grad: int = 0
    backward: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"forward": self.forward, "forward_grad": self.forward_grad, "backward": self.backward}


@dataclass
class Required:
    """The passes a metric's definition requires: forwards (F), forward + backward pairs (FB), and how."""

    forward: int = 0
    forward_backward: int = 0
    how: str = ""

    def seconds(self, costs: dict[str, float]) -> float:
        return self.forward * costs["forward"] + self.forward_backward * costs["forward_backward"]


@dataclass
class Census:
    """Counts the passes of `model` while installed (`with Census(model) as c: ...; c.take()`)."""

    model: nn.Module
    counts: Passes = field(default_factory=Passes)
    _handle: object = None

    def __enter__(self) -> Census:
        counts = self.counts

        def on_forward(module, args, output):  # a closure: deepcopy shares it (a bound method would be copied)
            items = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 0
            if isinstance(output, torch.Tensor) and output.requires_grad:
                counts.forward_grad += items
                output.register_hook(lambda g: setattr(counts, "backward", counts.backward + g.shape[0]))
            else:
                counts.forward += items

        self._handle = self.model.register_forward_hook(on_forward)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def take(self) -> Passes:
        """The counts since the last `take`, and zero them."""
        out = Passes(**self.counts.as_dict())
        self.counts.forward = self.counts.forward_grad = self.counts.backward = 0
        return out


def _per_image(run: Callable[[torch.Tensor], None], x: torch.Tensor, chunk: int, repeats: int) -> float:
    """CPU seconds per image of `run` over `x` in chunks of `chunk` (median of `repeats`, one warm-up)."""
    run(x[:chunk])
    times = []
    for _ in range(repeats):
        t = time.process_time()
        for s in range(0, len(x), chunk):
            run(x[s : s + chunk])
        times.append((time.process_time() - t) / len(x))
    return statistics.median(times)


def unit_costs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunks=(16, 32, 64, 128, 256),
               images: int = 256, repeats: int = 3) -> dict:
    """CPU seconds per image of a forward and of a forward + backward to the input, each the best over
    `chunks` and both layouts (NCHW, and NHWC through channels-last views of the weights)."""
    from torch.func import functional_call

    model = model.eval()
    reps = -(-images // len(x))
    x, y = x.repeat(reps, 1, 1, 1)[:images], y.repeat(reps)[:images]
    flat = {k: v.detach() for k, v in model.named_parameters()}
    layouts = {"nchw": lambda t: functional_call(model, flat, (t,)),
               "nhwc": lambda t: functional_call(model, {k: as_nhwc(v) for k, v in flat.items()}, (as_nhwc(t),))}

    def forward(layout):
        def run(t):
            with torch.no_grad():
                layouts[layout](t)
        return run

    def forward_backward(layout):
        def run(t):
            t = t.clone().requires_grad_()
            out = layouts[layout](t)
            torch.autograd.grad(out.gather(1, y[: len(t), None]).sum(), t)  # any class per row: the same cost
        return run

    table = {}
    for kind, make in (("forward", forward), ("forward_backward", forward_backward)):
        tried = {(layout, c): _per_image(make(layout), x, c, repeats) for layout in layouts for c in chunks}
        (layout, chunk), best = min(tried.items(), key=lambda kv: kv[1])
        table[kind] = best
        table[f"{kind}_at"] = {"layout": layout, "chunk": chunk}
        table[f"{kind}_tried"] = {f"{lay}/{c}": v for (lay, c), v in tried.items()}
    return table


def floor_rows(rows: list[dict], required: dict[str, Required], costs: dict) -> tuple[list[dict], dict]:
    """Per metric and in total: passes required / ours / Quantus, the floor, and each side's seconds over it."""
    out, total = [], {"floor_s": 0.0, "ours_cpu": 0.0, "quantus_cpu": 0.0}
    for r in rows:
        need = required.get(r["metric"], Required(how="no model passes: reads the maps only"))
        floor = need.seconds(costs)
        row = {"metric": r["metric"], "required_forward": need.forward,
               "required_forward_backward": need.forward_backward,
               "how": need.how, "ours_passes": r.get("ours_passes"), "quantus_passes": r.get("quantus_passes"),
               "floor_s": floor, "ours_cpu": r["ours_cpu"], "quantus_cpu": r["quantus_cpu"],
               "ours_over_floor": r["ours_cpu"] / floor if floor else None,
               "quantus_over_floor": r["quantus_cpu"] / floor if floor else None}
        out.append(row)
        for k in total:
            total[k] += row[k]
    total["ours_over_floor"] = total["ours_cpu"] / total["floor_s"]
    total["quantus_over_floor"] = total["quantus_cpu"] / total["floor_s"]
    total["max_speedup_at_floor"] = total["quantus_cpu"] / total["floor_s"]
    return out, total


def print_floor(rows: list[dict], total: dict, costs: dict) -> None:
    """The floor table, one line per metric."""
    print(f"unit costs (CPU s / image): forward {costs['forward'] * 1e3:.3f} ms at {costs['forward_at']}, "
          f"forward+backward {costs['forward_backward'] * 1e3:.3f} ms at {costs['forward_backward_at']}")
    print(f"{'metric':<24} {'required F / FB':>16} {'ours F/Fg/B':>22} {'Quantus F/Fg/B':>22} {'floor s':>8} "
          f"{'ours/floor':>10} {'Q/floor':>8}")
    fmt = lambda p: "-" if p is None else f"{p['forward']}/{p['forward_grad']}/{p['backward']}"  # noqa: E731
    ratio = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        need = f"{r['required_forward']}/{r['required_forward_backward']}"
        print(f"{r['metric']:<24} {need:>16} {fmt(r['ours_passes']):>22} {fmt(r['quantus_passes']):>22} "
              f"{r['floor_s']:8.2f} {ratio(r['ours_over_floor']):>10} {ratio(r['quantus_over_floor']):>8}")
    print(f"total: floor {total['floor_s']:.1f} s, ours {total['ours_cpu']:.1f} s ({total['ours_over_floor']:.2f}× the "
          f"floor), Quantus {total['quantus_cpu']:.1f} s ({total['quantus_over_floor']:.2f}×): the largest speed-up "
          f"over Quantus of any implementation computing the required passes is {total['max_speedup_at_floor']:.2f}×")


def explanation_passes(targets: torch.Tensor, ig_steps: int) -> int:
    """Forward + backward pairs one explanation of the bench's 4 methods needs for these images: Grad-CAM,
    saliency and IG's α = 1 point share one (one backward gives the layer's and the input's gradient of the
    same logit at x itself), Guided Backprop one (its ReLUs' backward differs), IG's steps − 2 inner points one
    each (trapezoid rule: α = 0 and 1 are end points), and IG's α = 0 point, the zero baseline, once per
    distinct class (the same input for every image)."""
    return len(targets) * (1 + 1 + ig_steps - 2) + int(torch.unique(targets).numel())


# --- the leaderboard's floor (issue 31): passes its columns and methods require per image ------------------------

# Passes per image of each default method on a 224 px resnet18 explained at layer4 (C = 512 channels), at the
# method's default options: (forwards, forward + backward pairs). Gradient CAMs read one forward (their
# backward to layer4 is the head only); a method's own call always includes its shared pass.
C, WINDOWS = 512, 27 * 27
METHOD_PASSES: dict[str, tuple[float, float]] = {
    **{m: (1, 0) for m in ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
                           "eigengradcam", "kpcacam", "finercam", "ablationcam")},
    **{m: (0, 1) for m in ("saliency", "inputxgrad", "guided-backprop", "guided-gradcam", "lrp", "fullgrad")},
    "deeplift": (0, 1), "smoothgradcam++": (1, 4), "smoothgrad": (0, 50), "ig": (0, 50), "gradientshap": (0, 50),
    "deepliftshap": (8, 8), "scorecam": (C + 1, 0), "occlusion": (WINDOWS + 1, 0), "sscam": (35 * C + 1, 0),
    "iscam": (10 * C + 1, 0), "rise": (4000, 0), "extremal": (0, 800),
}
CURVES = ("deletion_zero", "deletion_blur", "insertion_blur", "insertion_zero")


def leaderboard_required(columns: list[str], h: int, w: int, maps: int, step: int | None = None,
                         runs: int = 100, n_infidelity: int = 10) -> dict[str, Required]:
    """Forwards per image each column's definition requires for `maps` maps of an h×w image: a curve's inner
    points per map (its first and last points are the clean image and the substrate, the same for every map),
    one masked image per map for Average Drop / Increase (pixel flipping reads the deletion curve), the random
    subsets of faithfulness correlation and the perturbations of infidelity once per image (they do not depend
    on the map), and the self-scores (clean image, black, blurred) once per image."""
    points = math.ceil(h * w / (w if step is None else step)) + 1
    out = {}
    for col in columns:
        if col in CURVES:
            out[col] = Required(forward=maps * (points - 2), how=f"{points - 2} inner points × {maps} maps")
        elif col == "avg_drop_pct":
            out[col] = Required(forward=maps, how="one masked image per map (Increase reads the same)")
        elif col == "faith_corr":
            out[col] = Required(forward=runs, how=f"{runs} random subsets, the same for every map")
        elif col == "infidelity":
            out[col] = Required(forward=n_infidelity, how=f"{n_infidelity} perturbations, the same for every map")
    out["self-scores"] = Required(forward=3, how="clean, black and blurred image, once per image")
    return out


def leaderboard_floor(methods: list[str], columns: list[str], costs: dict, h: int = 224, w: int = 224) -> dict:
    """The floor of a default leaderboard per image in CPU seconds: its methods' passes and its columns' passes
    at the unit costs `costs` (CPU s per image of a forward and of a forward + backward)."""
    maps = len(methods) + 2  # + the calibration maps (random, Sobel): scored, never explained by the model
    cols = leaderboard_required(columns, h, w, maps)
    meth = {m: Required(*METHOD_PASSES[m]) for m in methods}
    return {"columns": {k: (r.forward, r.seconds(costs), r.how) for k, r in cols.items()},
            "methods": {k: (r.forward, r.forward_backward, r.seconds(costs)) for k, r in meth.items()},
            "columns_s": sum(r.seconds(costs) for r in cols.values()),
            "methods_s": sum(r.seconds(costs) for r in meth.values())}


def main() -> None:
    """`python bench/census.py --leaderboard`: the default leaderboard's floor per 224 px image on resnet18."""
    import argparse
    import json

    import attnscope as ats
    from attnscope.evaluate.columns import select

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--leaderboard", action="store_true")
    parser.add_argument("--images", type=int, default=32, help="images the unit costs are measured on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ats.models.get("resnet18").eval()
    x = torch.randn(8, 3, 224, 224)
    y = torch.zeros(8, dtype=torch.long)
    costs = unit_costs(model, x, y, chunks=(8, 16), images=args.images, repeats=1)
    methods = [m for m in METHOD_PASSES if m in ats.list_methods()]
    floor = leaderboard_floor(methods, select("default"), costs)
    print(json.dumps({"unit_costs": {k: costs[k] for k in ("forward", "forward_backward")}, **floor}, indent=1))
    total = floor["columns_s"] + floor["methods_s"]
    print(f"floor per 224 px image: columns {floor['columns_s']:.0f} CPU s + methods {floor['methods_s']:.0f} "
          f"CPU s = {total:.0f} CPU s ({len(methods)} methods + 2 calibration maps)")


if __name__ == "__main__":
    main()
