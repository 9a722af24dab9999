"""Every metric attnscope and Quantus both have (captum for infidelity), side by side in one run:
the same model, 32 images, 4 methods' maps, perturbation draws and settings; per metric the time of
each side, the ratio, and the largest difference of the per-image numbers.

    PYTHONPATH=src python bench/metrics_vs_quantus.py --checkpoint runs/grey-base --images 32

`runs/grey-base` is a one-channel SmallCNN (`attnscope train --model-opt in_channels=1 --data clutter
--data-opt grey=true`): with one channel Quantus' per-feature perturbations are attnscope's per-pixel
ones, so every number can be compared (Quantus' ROAD also fails on 3-channel images with a 1-channel
map). Maps that metrics are given (`a_batch`) are computed once by attnscope and handed to both;
metrics that explain (robustness, randomisation) explain on each side — Quantus once per method
and metric, attnscope once for the 4 methods together. Times are wall and CPU seconds of this
process (both sides single-threaded, alternating); on a shared machine read the CPU column.

`--alone` runs each side in its own fresh process instead (`--side ours|quantus` in a child: every metric of
that side only, its numbers sent back as JSON) and compares the two in the parent; the maps both sides are
given are computed by attnscope in each child before its first metric, untimed, as in one process.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/metrics_vs_quantus.py --checkpoint runs/grey-base --alone
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from alone import sides
from sanity_vs_quantus import METHODS, clock, quantus_explain, since

from attnscope import data, evaluate, explain, metrics
from attnscope.cli.options import load_model
from attnscope.cli.sanity import load_probe
from attnscope.evaluate.robustness import perturb
from attnscope.sanity import emprt, random_logit, smprt, trace_blocks

ROBUST = {"max_sensitivity": "MaxSensitivity", "avg_sensitivity": "AvgSensitivity",
          "local_lipschitz": "LocalLipschitzEstimate", "ris": "RelativeInputStability",
          "ros": "RelativeOutputStability"}


class Bench:
    """The shared inputs, and the rows: one per metric with both sides' times and numbers."""

    def __init__(self, model, x, y, masks, mosaics, n_perturb: int, seed: int, side: str | None = None) -> None:
        import quantus

        self.q, self.model, self.x, self.y, self.masks = quantus, model, x, y, masks
        self.side = side  # a child of --alone computes this side only and keeps its numbers in `sides`
        self.sides: list[dict] = []
        self.mosaics, self.n, self.seed = mosaics, n_perturb, seed
        self.opts = {k: v[0] for k, v in METHODS.items()}
        self.maps = {m: explain(model, x, m, y, options={m: self.opts[m]})[m].values for m in METHODS}
        self.rows: list[dict] = []

    def quantus(self, cls: str, init: dict, a: torch.Tensor | None = None, x: torch.Tensor | None = None,
                y: torch.Tensor | None = None, method: str | None = None, **call):
        """One Quantus metric on our maps `a` (or explaining with `method` when `a` is None); the error
        message when Quantus refuses or fails."""
        try:
            return self._quantus(cls, init, a, x, y, method, **call)
        except (AssertionError, ValueError, IndexError, KeyError) as e:
            return f"{type(e).__name__}: {str(e)[:60]}"

    def _quantus(self, cls, init, a, x, y, method, **call):
        x = self.x if x is None else x
        y = self.y if y is None else y
        kw = {} if method is None else {"explain_func": quantus_explain, "explain_func_kwargs": METHODS[method][1]}
        metric = getattr(self.q, cls)(disable_warnings=True, **init)
        out = metric(model=self.model, x_batch=x.numpy(), y_batch=y.numpy(),
                     a_batch=None if a is None else a[:, None].numpy(), device="cpu", **kw, **call)
        return out

    def case(self, name: str, group: str, ours: Callable[[], dict], theirs: Callable[[], dict], note: str = "",
             relative: bool = False) -> None:
        """Time both sides (alternating) and compare: each returns {key: per-image array} (a key Quantus
        could not compute maps to an error message). `relative`: differences relative to max(1, |theirs|)."""
        if self.side is not None:
            t = clock()
            values = (ours if self.side == "ours" else theirs)()
            self.sides.append({"metric": name, "group": group, "note": note, "relative": relative, "time": since(t),
                               "values": {k: v if isinstance(v, str) else np.asarray(v, dtype=np.float64).tolist()
                                          for k, v in values.items()}})
            print(f"{name:<24} {self.side} {self.sides[-1]['time'][1]:7.2f} s", file=sys.stderr, flush=True)
            return
        t = clock()
        a = ours()
        t_ours = since(t)
        t = clock()
        b = theirs()
        t_theirs = since(t)
        self.compare(name, group, a, b, t_ours, t_theirs, note, relative)

    def compare(self, name: str, group: str, a: dict, b: dict, t_ours: tuple[float, float],
                t_theirs: tuple[float, float], note: str = "", relative: bool = False) -> None:
        """The row of one metric from both sides' numbers and times."""
        diffs, notes, failed = [], [note] if note else [], {}
        for m in a:
            if isinstance(b[m], str):
                failed.setdefault(m.split("/")[0], b[m])
                continue
            u = np.asarray(a[m], dtype=np.float64)
            v = np.asarray(b[m], dtype=np.float64)
            both = np.isfinite(u) & np.isfinite(v)
            d = np.abs(u[both] - v[both]) / (np.maximum(1.0, np.abs(v[both])) if relative else 1.0)
            diffs.append(float(d.max()) if both.any() else float("nan"))
            if diffs[-1] > 1e-5:
                notes.append(f"{m}: {diffs[-1]:.1e}")
            if (np.isfinite(u) != np.isfinite(v)).any():
                notes.append(f"{m}: NaN on one side only ({int((~np.isfinite(v)).sum())} in Quantus)")
        notes += [f"{m}: Quantus fails ({why})" for m, why in failed.items()]
        note = "; ".join(notes)
        row = {"metric": name, "group": group, "ours_wall": t_ours[0], "ours_cpu": t_ours[1],
               "quantus_wall": t_theirs[0], "quantus_cpu": t_theirs[1],
               "max_diff": max(diffs) if diffs else float("nan"), "relative": relative, "note": note}
        self.rows.append(row)
        print(f"{name:<24} {group:<13} ours {t_ours[1]:7.2f} s  quantus {t_theirs[1]:7.2f} s  "
              f"{t_theirs[1] / max(t_ours[1], 1e-9):6.1f}x  max|diff| {row['max_diff']:.1e}  {note}", flush=True)

    def per_method(self, name: str, group: str, ours: Callable[[torch.Tensor], torch.Tensor],
                   theirs: Callable[[torch.Tensor], np.ndarray], note: str = "") -> None:
        self.case(name, group, lambda: {m: ours(v).double().numpy() for m, v in self.maps.items()},
                  lambda: {m: theirs(v) for m, v in self.maps.items()}, note)


def localisation_and_complexity(b: Bench) -> None:
    s = b.masks
    call = {"s_batch": s[:, None].numpy()}
    raw = {"normalise": False}
    b.per_method("pointing_game", "localisation", lambda m: metrics.pointing_game(m, s),
                 lambda m: b.quantus("PointingGame", raw, m, **call))
    b.per_method("relevance_mass", "localisation", lambda m: metrics.relevance_mass(m, s),
                 lambda m: b.quantus("RelevanceMassAccuracy", raw, m, **call))
    b.per_method("relevance_rank", "localisation", lambda m: metrics.relevance_rank(m, s),
                 lambda m: b.quantus("RelevanceRankAccuracy", raw, m, **call))
    b.per_method("top_k_intersection", "localisation", lambda m: metrics.top_k_intersection(m, s, 100),
                 lambda m: b.quantus("TopKIntersection", {**raw, "k": 100}, m, **call))
    b.per_method("auc", "localisation", lambda m: metrics.roc_auc(m, s), lambda m: b.quantus("AUC", raw, m, **call))
    mx, my, mq = b.mosaics
    mosaic_maps = {m: explain(b.model, mx, m, my, options={m: b.opts[m]})[m].values for m in METHODS}
    b.case("focus", "localisation", lambda: {m: metrics.focus(v, mq).numpy() for m, v in mosaic_maps.items()},
           lambda: {m: b.quantus("Focus", raw, v, x=mx, y=my, custom_batch=mq.numpy().astype(int))
                    for m, v in mosaic_maps.items()})
    b.per_method("sparseness", "complexity", metrics.sparseness, lambda m: b.quantus("Sparseness", raw, m),
                 "Quantus adds 1e-7 to every |M| (G scales by Σa / (Σa + n·1e-7))")
    b.per_method("complexity", "complexity", metrics.complexity, lambda m: b.quantus("Complexity", raw, m))
    b.per_method("effective_complexity", "complexity", metrics.effective_complexity,
                 lambda m: b.quantus("EffectiveComplexity", raw, m / m.abs().flatten(1).amax(1)[:, None, None]))


def faithfulness(b: Bench) -> None:
    prob = evaluate.class_probability(b.model, b.y)
    logit = evaluate.class_logit(b.model, b.y)
    x = b.x
    zero = {"normalise": False, "perturb_baseline": 0.0}
    b.per_method("pixel_flipping", "faithfulness", lambda m: metrics.pixel_flipping(prob, x, m, "zero", 64)[:, 1:],
                 lambda m: b.quantus("PixelFlipping", {**zero, "features_in_step": 64}, m, softmax=True))
    b.per_method("region_perturbation", "faithfulness",
                 lambda m: (lambda c: c[:, :1] - c[:, 1:])(metrics.region_perturbation(prob, x, m, 8, 64)),
                 lambda m: b.quantus("RegionPerturbation", {**zero, "patch_size": 8, "regions_evaluation": 64},
                                     m, softmax=True))
    b.per_method("monotonicity", "faithfulness", lambda m: metrics.monotonicity(prob, x, m, "zero", 256),
                 lambda m: b.quantus("Monotonicity", {**zero, "features_in_step": 256, "abs": False}, m,
                                     softmax=True),
                 "Quantus never inserts the image (its baseline is refilled with the baseline): always 1")
    runs, size = 100, 224
    np.random.seed(b.seed)  # Quantus' draws, replayed for attnscope: per run one np.random.choice per image
    subsets = torch.from_numpy(np.stack([np.stack([np.random.choice(x[0].numel(), size, replace=False)
                                                   for _ in range(len(x))]) for _ in range(runs)], axis=1))

    def theirs_fc(m):
        np.random.seed(b.seed)
        return b.quantus("FaithfulnessCorrelation", {**zero, "nr_runs": runs, "subset_size": size,
                                                      "return_aggregate": False}, m, softmax=True)

    b.per_method("faithfulness_corr", "faithfulness",
                 lambda m: metrics.faithfulness_correlation(prob, x, m, subsets=subsets), theirs_fc)

    def irof_ours(m):
        rel, counts = metrics.irof_curve(prob, x, m, substrate="zero")
        return torch.tensor([s - np.trapezoid(rel[i, 1 : s + 1].numpy()) for i, s in enumerate(counts.tolist())])

    def irof_theirs(m):
        np.trapz = np.trapezoid  # Quantus 0.6 calls np.trapz, which NumPy 2.4 removed
        return b.quantus("IROF", {**zero, "return_aggregate": False}, m, softmax=True)

    b.per_method("irof", "faithfulness", irof_ours, irof_theirs,
                 "attnscope reports it normalised to [0, 1]; compared here in Quantus' units")
    levels = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    correct = evaluate.correct_class(b.model, b.y)
    b.case("road", "faithfulness",
           lambda: {m: metrics.road_curve(correct, x, v, levels, noise=0.0).mean(0).numpy() for m, v in b.maps.items()},
           lambda: {m: np.asarray(list(b.quantus("ROAD", {"normalise": False, "percentages": levels, "noise": 0.0},
                                                 v).values())) for m, v in b.maps.items()},
           "Quantus keeps the mean over images per level; noise 0 on both sides")
    g = torch.Generator().manual_seed(b.seed)
    noise = 0.2 * torch.randn(len(x), 10, *x.shape[1:], generator=g)

    def captum_infidelity(m):
        from captum.metrics import infidelity

        flat = noise.flatten(0, 1)
        return infidelity(b.model, lambda inputs: (flat, inputs - flat), x, m[:, None], target=b.y,
                          n_perturb_samples=10).double().numpy()

    b.per_method("infidelity (captum)", "faithfulness",
                 lambda m: metrics.infidelity(logit, x, m, perturbations=noise), captum_infidelity)


def robustness(b: Bench) -> None:
    perturbed = perturb(b.x, b.n, "uniform", 0.02, b.seed)

    def replay():
        draws = iter(perturbed.transpose(0, 1).flatten(2).numpy())
        return lambda arr, indices, **kw: next(draws).astype(arr.dtype)

    def theirs():
        out = {}
        for name, cls in ROBUST.items():
            for m in METHODS:
                init = {"nr_samples": b.n, "perturb_func": replay(), "normalise": False}
                out[f"{m}/{name}"] = b.quantus(cls, init, method=m, softmax=False)
        return out

    def ours():
        scores = evaluate.robustness(b.model, b.x, list(METHODS), b.y, list(ROBUST), perturbed=perturbed,
                                     options=b.opts)
        return {f"{m}/{name}": scores[m][name].numpy() for name in ROBUST for m in METHODS}

    b.case("robustness (5 metrics)", "robustness", ours, theirs,
           "one explanation of the perturbed copies for 4 methods × 5 metrics vs 20", relative=True)


def randomisation(b: Bench, samples: int) -> None:
    import quantus.metrics.randomisation.smooth_mprt as smooth

    x, y = b.x, b.y
    z = torch.randn(samples - 1, *x.shape, generator=torch.Generator().manual_seed(b.seed), dtype=torch.float64)
    scale = 0.1 * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).double()
    noise = torch.cat([z * scale.view(1, -1, 1, 1, 1), torch.zeros(1, *x.shape, dtype=torch.float64)]).float()
    seed43 = lambda i, name: 43  # noqa: E731  Quantus' seed 42 + 1 before every reset

    steps = [blk.name for blk in trace_blocks(b.model, x[:1])]

    def smprt_ours():
        r = smprt(b.model, x, list(METHODS), targets=y, noise=noise, block_seed=seed43, metrics=("spearman_abs",),
                  calibration=(), options=b.opts, keep=0)
        return {f"{m}/{s}": r.scores[m][s]["spearman_abs"].numpy() for m in METHODS for s in r.steps}

    def smprt_theirs():
        calls = iter(range(10**9))
        real = smooth.np.random.randn
        smooth.np.random.randn = lambda *shape: z[next(calls) % (samples - 1)].numpy()
        try:
            out = {}
            for m in METHODS:
                res = b.quantus("SmoothMPRT", {"layer_order": "bottom_up", "seed": 42, "nr_samples": samples,
                                               "abs": True, "normalise": True}, method=m)
                if isinstance(res, str):  # Quantus refused: every layer of this method
                    out.update({f"{m}/{s}": res for s in steps})
                else:
                    out.update({f"{m}/{k}": v for k, v in res.items() if k != "original"})
            return out
        finally:
            smooth.np.random.randn = real

    b.case("smprt", "randomisation", smprt_ours, smprt_theirs, f"{samples} noisy copies, same draws")
    b.case("emprt", "randomisation",
           lambda: {m: v["all blocks"]["complexity_rise"].numpy() for m, v in
                    emprt(b.model, x, list(METHODS), targets=y, block_seed=seed43, calibration=(),
                          options=b.opts, keep=0).scores.items()},
           lambda: {m: b.quantus("EfficientMPRT", {"layer_order": "bottom_up", "seed": 42, "abs": False,
                                                   "normalise": False}, method=m) for m in METHODS})
    from quantus.functions.similarity_func import correlation_spearman

    np.random.seed(42)
    pick = torch.from_numpy(np.random.randint(0, 9, len(x)))
    other = pick + (pick >= y).long()
    b.case("random_logit", "randomisation",
           lambda: {m: v["random class"]["spearman_signed"].numpy() for m, v in
                    random_logit(b.model, x, list(METHODS), targets=y, other=other, metrics=("spearman_signed",),
                                 calibration=(), options=b.opts, keep=0).scores.items()},
           lambda: {m: b.quantus("RandomLogit", {"num_classes": 10, "seed": 42, "abs": False, "normalise": True,
                                                 "similarity_func": correlation_spearman}, method=m)
                    for m in METHODS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/grey-base")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--perturbations", type=int, default=10, help="robustness: perturbed copies per image")
    parser.add_argument("--samples", type=int, default=5, help="sMPRT: noisy copies per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="localisation,faithfulness,robustness,randomisation")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--alone", action="store_true", help="each side in its own fresh process")
    parser.add_argument("--side", choices=("ours", "quantus"), default=None, help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, header = load_model(args.checkpoint)
    probe = load_probe(args.checkpoint, header, None, args.images)
    cfg = header.get("info", {}).get("data_cfg", {})
    built = data.mosaics(data.get(probe.data, "test", 4 * args.images, seed=0, **cfg), args.images, seed=args.seed)
    started = time.perf_counter()
    b = Bench(model, probe.images, probe.labels, probe.masks, (built.images, built.labels, built.quadrants),
              args.perturbations, args.seed, args.side)
    parts = {"localisation": localisation_and_complexity, "faithfulness": faithfulness, "robustness": robustness,
             "randomisation": lambda bench: randomisation(bench, args.samples)}
    if args.alone:
        both = [row["sides"] for row in sides(__file__, sys.argv[1:], ("ours", "quantus"))]
        print(f"{args.images} images, {len(METHODS)} methods ({', '.join(METHODS)}), 1 thread; CPU seconds; "
              "each side alone in a fresh process")
        for ours, theirs in zip(*both, strict=True):
            b.compare(ours["metric"], ours["group"], ours["values"], theirs["values"], ours["time"], theirs["time"],
                      ours["note"], ours["relative"])
    else:
        print(f"{args.images} images, {len(METHODS)} methods ({', '.join(METHODS)}), 1 thread; CPU seconds")
        for name in args.only.split(","):
            parts[name](b)
    if args.side is not None:
        print(json.dumps({"side": args.side, "sides": b.sides}))
        return
    totals = {k: sum(r[k] for r in b.rows) for k in ("ours_wall", "ours_cpu", "quantus_wall", "quantus_cpu")}
    print(f"total CPU: attnscope {totals['ours_cpu']:.1f} s, Quantus {totals['quantus_cpu']:.1f} s: "
          f"{totals['quantus_cpu'] / totals['ours_cpu']:.1f}x; wall: {totals['ours_wall']:.1f} s vs "
          f"{totals['quantus_wall']:.1f} s ({time.perf_counter() - started:.0f} s in all)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": args.images, "rows": b.rows, "totals": totals}, f, indent=2)


if __name__ == "__main__":
    main()
