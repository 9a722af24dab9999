"""Cascading model-parameter randomisation of 4 methods: attnscope vs Quantus' MPRT, in one process.

Same model, same images, same labels, same re-initialisation (each layer's `reset_parameters()`
after `torch.manual_seed(43)`, which is what Quantus does with seed=42), same similarity
(Spearman rank correlation of absolute maps). Quantus runs one MPRT per method with its own
explainers (captum); attnscope runs one cascade that explains the 4 methods from shared passes.

    PYTHONPATH=src python bench/sanity_vs_quantus.py --checkpoint runs/sanity-base --images 32

Prints per-method agreement (largest per-image difference over all layers) and the timings: wall
seconds and this process's CPU seconds (on a shared machine the CPU time is the cost of the work;
both sides run single-threaded in the same process, alternating).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings

import numpy as np
import torch
from census import Census, Required, explanation_passes, floor_rows, print_floor, unit_costs

from attnscope.cli.options import load_model
from attnscope.cli.sanity import load_probe
from attnscope.sanity import model_randomization

# attnscope method → (its options, the Quantus explain_func kwargs that compute the same map)
METHODS = {
    "gradcam": ({"relu": False}, {"method": "LayerGradCam", "gc_layer": "model.features",
                                  "interpolate": (64, 64), "interpolate_mode": "bilinear"}),
    "saliency": ({"reduce": "abs-sum"}, {"method": "Saliency"}),
    "guided-backprop": ({"reduce": "sum"}, {"method": "GuidedBackprop"}),
    "ig": ({"steps": 10, "rule": "riemann-trapezoid", "reduce": "sum"}, {"method": "IntegratedGradients"}),
}


def quantus_explain(model, inputs, targets, **kwargs):
    """quantus.explain, plus captum's GuidedBackprop (which quantus.explain does not offer)."""
    import quantus
    from captum.attr import GuidedBackprop

    if kwargs.get("method") != "GuidedBackprop":
        return quantus.explain(model, inputs, targets, **kwargs)
    model.eval()
    x = torch.as_tensor(inputs).requires_grad_()
    attr = GuidedBackprop(model).attribute(x, target=torch.as_tensor(targets))
    return attr.sum(dim=1, keepdim=True).detach().numpy()


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine the CPU time is what the work costs."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def run_quantus(model, x: torch.Tensor, y: torch.Tensor, methods: list[str]):
    import quantus

    scores, started = {}, clock()
    for name in methods:
        kwargs = METHODS[name][1]
        metric = quantus.MPRT(layer_order="top_down", seed=42, abs=True, normalise=True, disable_warnings=True,
                              return_average_correlation=False)
        scores[name] = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                              explain_func=quantus_explain, explain_func_kwargs=kwargs, device="cpu",
                              batch_size=len(x))
    return scores, since(started)


def run_ours(model, x: torch.Tensor, y: torch.Tensor, methods: list[str], channels_last: bool, reuse: bool):
    started = clock()
    result = model_randomization(model, x, methods, targets=y, mode="cascading", init="default",
                                 block_seed=lambda position, name: 43, metrics=("spearman_abs",), calibration=(),
                                 options={k: METHODS[k][0] for k in methods}, keep=0, channels_last=channels_last,
                                 reuse=reuse)
    return result, since(started)


def floor(model, x: torch.Tensor, y: torch.Tensor, methods: list[str], steps: int, report: dict, ours, theirs) -> dict:
    """The census of one run of each side against the passes the cascade requires (`census.Required`)."""
    if methods != list(METHODS):
        raise SystemExit("--floor derives the required passes for the 4 methods together; drop --methods")
    need = Required(0, (steps + 1) * explanation_passes(y, METHODS["ig"][0]["steps"]),
                    f"{steps + 1} models (trained, then {steps} cascade steps) × one explanation of the 4 methods; "
                    "full passes (the unchanged layers below a top-down step could be replayed: not counted)")
    costs = unit_costs(model, x, y)
    row = {"metric": "mprt (cascade)", "ours_cpu": report["ours_cpu_s"], "quantus_cpu": report["quantus_cpu_s"],
           "ours_passes": ours.as_dict(), "quantus_passes": theirs.as_dict()}
    rows, total = floor_rows([row], {"mprt (cascade)": need}, costs)
    print_floor(rows, total, costs)
    return {"unit_costs": costs, "rows": rows, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/sanity-base")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (the best is kept)")
    parser.add_argument("--methods", default=",".join(METHODS), help="a subset of " + ", ".join(METHODS))
    parser.add_argument("--channels-last", action="store_true", help="our cascade in NHWC layout")
    parser.add_argument("--no-reuse", action="store_true", help="our cascade without replaying unchanged modules")
    parser.add_argument("--floor", action="store_true", help="count every pass of both sides and compare with "
                        "the passes the cascade requires at a measured cost per pass (bench/census.py)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    methods = args.methods.split(",")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    model, header = load_model(args.checkpoint)
    probe = load_probe(args.checkpoint, header, None, args.images)
    x, y = probe.images, probe.labels

    ours_t, theirs_t, census = [], [], Census(model) if args.floor else None
    with census or contextlib.nullcontext():
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            result, t = run_ours(model, x, y, methods, args.channels_last, not args.no_reuse)
            ours_t.append(t)
            ours_passes = census.take() if census else None
            quantus_scores, t = run_quantus(model, x, y, methods)
            theirs_t.append(t)
            quantus_passes = census.take() if census else None

    report = {"images": len(x), "threads": args.threads, "layers": result.steps, "methods": {}}
    print(f"{len(x)} images, {len(result.steps)} layers, cascading top-down, Spearman of |maps|, "
          f"{args.threads} thread(s)")
    print(f"{'method':<16} {'max |ours - quantus|':>21} {'ours: mean over layers':>23} "
          f"{'quantus avg (incl. original)':>29}")
    for name in methods:
        diffs = []
        for step in result.steps:
            ours = result.scores[name][step]["spearman_abs"].numpy()
            theirs = np.asarray(quantus_scores[name][step], dtype=float)
            diffs.append(np.nanmax(np.abs(ours - theirs)))
        ours_mean = np.nanmean([result.value(name, s, "spearman_abs") for s in result.steps])
        with_original = np.nanmean([np.nanmean(v) for v in quantus_scores[name].values()])
        report["methods"][name] = {"max_abs_diff": float(max(diffs)), "ours_mean_over_layers": float(ours_mean),
                                   "quantus_mean_incl_original": float(with_original)}
        print(f"{name:<16} {max(diffs):>21.2e} {ours_mean:>23.4f} {with_original:>29.4f}")
    for kind, i in (("wall", 0), ("cpu", 1)):
        best_ours, best_theirs = min(t[i] for t in ours_t), min(t[i] for t in theirs_t)
        report.update({f"ours_{kind}_s": best_ours, f"quantus_{kind}_s": best_theirs,
                       f"speedup_{kind}": best_theirs / best_ours})
        print(f"{kind} time: attnscope {best_ours:.2f} s, Quantus {best_theirs:.2f} s (best of {args.repeats}): "
              f"{best_theirs / best_ours:.1f}x faster")
    report["reused"] = result.meta.get("reused")
    if census:
        report["floor"] = floor(model, x, y, methods, len(result.steps), report, ours_passes, quantus_passes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
