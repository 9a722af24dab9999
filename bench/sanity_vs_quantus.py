"""Cascading model-parameter randomisation of 4 methods: attnscope vs Quantus' MPRT, in one process.

Same model, same images, same labels, same re-initialisation (each layer's `reset_parameters()`
after `torch.manual_seed(43)`, which is what Quantus does with seed=42), same similarity
(Spearman rank correlation of absolute maps). Quantus runs one MPRT per method with its own
explainers (captum); attnscope runs one cascade that explains the 4 methods from shared passes.

    PYTHONPATH=src python bench/sanity_vs_quantus.py --checkpoint runs/sanity-base --images 32

Prints per-method agreement (largest per-image difference over all layers) and the timings: wall
seconds and this process's CPU seconds (on a shared machine the CPU time is the cost of the work;
both sides run single-threaded in the same process, alternating). `--alone` runs each side in its own
fresh process instead (`--side ours|quantus` in a child, its scores sent back as JSON), so neither warms
the allocator or the kernels for the other:

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/sanity_vs_quantus.py --checkpoint runs/sanity-base --alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings

import numpy as np
import torch
from alone import sides
from census import Census, Required, explanation_passes, floor_rows, print_floor, unit_costs

from attnscope import data
from attnscope.explain import Explainer
from attnscope.models import sources
from attnscope.models.runs import checkpoint_data
from attnscope.sanity import Comparison, Randomisation, model_randomization
from attnscope.track import probe_from

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
    how = Explainer(methods, options={k: METHODS[k][0] for k in methods})
    setup = Randomisation(init="default", block_seed=lambda position, name: 43, channels_last=channels_last,
                          reuse=reuse)
    result = model_randomization(model, x, how, targets=y, mode="cascading", randomisation=setup,
                                 comparison=Comparison(("spearman_abs",), calibration=(), keep=0))
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
    parser.add_argument("--alone", action="store_true", help="each side in its own fresh process")
    parser.add_argument("--side", choices=("ours", "quantus"), default=None, help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.floor and (args.alone or args.side):
        parser.error("--floor counts both sides' passes in one process: it cannot be combined with --alone")
    methods = args.methods.split(",")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    model, header = sources.build(args.checkpoint)
    name, data_seed, data_cfg = checkpoint_data(args.checkpoint, header)
    probe = probe_from(data.get(name, "test", args.images, seed=data_seed, **data_cfg), args.images)
    x, y = probe.images, probe.labels

    if args.side is not None:  # a child of --alone: one side, its scores and times as one JSON line
        print(json.dumps(SIDES[args.side](model, x, y, methods, args)))
        return
    passes: dict = {}  # --floor: each side's passes in its last run
    if args.alone:
        ours, theirs = sides(__file__, sys.argv[1:], tuple(SIDES))
    else:
        census = Census(model) if args.floor else None
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        with census or contextlib.nullcontext():
            for _ in range(args.repeats):  # alternate, so both see the same machine load
                for side, run in SIDES.items():
                    runs[side].append(run(model, x, y, methods, args, 1))
                    if census:
                        passes[side] = census.take()
        ours, theirs = ({**r[-1], "times": [t for one in r for t in one["times"]]} for r in runs.values())
    report = report_sides(ours, theirs, methods, args)
    if passes:
        report["floor"] = floor(model, x, y, methods, len(ours["steps"]), report, passes["ours"], passes["quantus"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


def ours_side(model, x: torch.Tensor, y: torch.Tensor, methods: list[str], args, repeats: int | None = None) -> dict:
    """attnscope's cascade `repeats` times: its times, steps, per-image scores and mean over layers per method."""
    times = []
    for _ in range(args.repeats if repeats is None else repeats):
        result, t = run_ours(model, x, y, methods, args.channels_last, not args.no_reuse)
        times.append(t)
    return {"times": times, "steps": list(result.steps), "reused": result.meta.get("reused"),
            "scores": {m: {s: result.scores[m][s]["spearman_abs"].tolist() for s in result.steps} for m in methods},
            "means": {m: float(np.nanmean([result.value(m, s, "spearman_abs") for s in result.steps]))
                      for m in methods}}


def quantus_side(model, x: torch.Tensor, y: torch.Tensor, methods: list[str], args,
                 repeats: int | None = None) -> dict:
    """Quantus' MPRT of each method `repeats` times: its times and per-image scores per layer."""
    times = []
    for _ in range(args.repeats if repeats is None else repeats):
        scores, t = run_quantus(model, x, y, methods)
        times.append(t)
    return {"times": times, "scores": {m: {k: np.asarray(v, dtype=float).tolist() for k, v in scores[m].items()}
                                       for m in methods}}


SIDES = {"ours": ours_side, "quantus": quantus_side}


def report_sides(ours: dict, theirs: dict, methods: list[str], args) -> dict:
    """Print the agreement per method and both sides' best times; the report."""
    steps, images = ours["steps"], len(next(iter(ours["scores"][methods[0]].values())))
    report = {"images": images, "threads": args.threads, "layers": steps, "methods": {}, "alone": args.alone}
    print(f"{images} images, {len(steps)} layers, cascading top-down, Spearman of |maps|, "
          f"{args.threads} thread(s){', each side alone in a fresh process' if args.alone else ''}")
    print(f"{'method':<16} {'max |ours - quantus|':>21} {'ours: mean over layers':>23} "
          f"{'quantus avg (incl. original)':>29}")
    for name in methods:
        diffs = [np.nanmax(np.abs(np.asarray(ours["scores"][name][step], dtype=float)
                                  - np.asarray(theirs["scores"][name][step], dtype=float))) for step in steps]
        with_original = np.nanmean([np.nanmean(v) for v in theirs["scores"][name].values()])
        report["methods"][name] = {"max_abs_diff": float(max(diffs)), "ours_mean_over_layers": ours["means"][name],
                                   "quantus_mean_incl_original": float(with_original)}
        print(f"{name:<16} {max(diffs):>21.2e} {ours['means'][name]:>23.4f} {with_original:>29.4f}")
    for kind, i in (("wall", 0), ("cpu", 1)):
        best_ours, best_theirs = min(t[i] for t in ours["times"]), min(t[i] for t in theirs["times"])
        report.update({f"ours_{kind}_s": best_ours, f"quantus_{kind}_s": best_theirs,
                       f"speedup_{kind}": best_theirs / best_ours})
        print(f"{kind} time: attnscope {best_ours:.2f} s, Quantus {best_theirs:.2f} s (best of {args.repeats}): "
              f"{best_theirs / best_ours:.1f}x faster")
    report["reused"] = ours["reused"]
    return report


if __name__ == "__main__":
    main()
