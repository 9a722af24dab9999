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
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from alone import sides
from census import Census, Required, explanation_passes, floor_rows, print_floor, unit_costs
from sanity_vs_quantus import METHODS, clock, quantus_explain, since

from attnscope import data, evaluate, explain, metrics
from attnscope.evaluate.robustness import perturb
from attnscope.explain import Explainer
from attnscope.models import sources
from attnscope.models.runs import checkpoint_data
from attnscope.sanity import Comparison, Randomisation, emprt, random_logit, smprt, trace_blocks
from attnscope.track import probe_from

ROBUST = {"max_sensitivity": "MaxSensitivity", "avg_sensitivity": "AvgSensitivity",
          "local_lipschitz": "LocalLipschitzEstimate", "ris": "RelativeInputStability",
          "ros": "RelativeOutputStability"}


class Bench:
    """The shared inputs, and the rows: one per metric with both sides' times and numbers."""

    def __init__(self, model, x, y, masks, mosaics, n_perturb: int, seed: int, census: Census | None = None,
                 side: str | None = None) -> None:
        import quantus

        self.q, self.model, self.x, self.y, self.masks = quantus, model, x, y, masks
        self.mosaics, self.n, self.seed, self.census = mosaics, n_perturb, seed, census
        self.side = side  # a child of --alone computes this side only and keeps its numbers in `sides`
        self.sides: list[dict] = []
        self.opts = {k: v[0] for k, v in METHODS.items()}
        self.how = Explainer(list(METHODS), options=self.opts)
        self.maps = {m: explain(model, x, m, y, options={m: self.opts[m]})[m].values for m in METHODS}
        self.rows: list[dict] = []
        self.wanted: set[str] | None = None

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
        if self.wanted is not None and name not in self.wanted:
            return
        if self.side is not None:
            t = clock()
            values = (ours if self.side == "ours" else theirs)()
            self.sides.append({"metric": name, "group": group, "note": note, "relative": relative, "time": since(t),
                               "values": {k: v if isinstance(v, str) else np.asarray(v, dtype=np.float64).tolist()
                                          for k, v in values.items()}})
            print(f"{name:<24} {self.side} {self.sides[-1]['time'][1]:7.2f} s", file=sys.stderr, flush=True)
            return
        passes = self.census.take if self.census else lambda: None
        passes()
        t = clock()
        a = ours()
        t_ours = since(t)
        ours_passes = passes()
        t = clock()
        b = theirs()
        t_theirs = since(t)
        quantus_passes = passes()
        row = self.compare(name, group, a, b, t_ours, t_theirs, note, relative)
        if self.census:
            row.update(ours_passes=ours_passes.as_dict(), quantus_passes=quantus_passes.as_dict())

    def compare(self, name: str, group: str, a: dict, b: dict, t_ours: tuple[float, float],
                t_theirs: tuple[float, float], note: str = "", relative: bool = False) -> dict:
        """The row of one metric from both sides' numbers and times (kept in `rows` and returned)."""
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
        return row

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
    b.per_method("pixel_flipping", "faithfulness", lambda m: metrics.pixel_flipping(m, x, prob, "zero", 64)[:, 1:],
                 lambda m: b.quantus("PixelFlipping", {**zero, "features_in_step": 64}, m, softmax=True))
    b.per_method("region_perturbation", "faithfulness",
                 lambda m: (lambda c: c[:, :1] - c[:, 1:])(metrics.region_perturbation(m, x, prob, 8, 64)),
                 lambda m: b.quantus("RegionPerturbation", {**zero, "patch_size": 8, "regions_evaluation": 64},
                                     m, softmax=True))
    b.per_method("monotonicity", "faithfulness", lambda m: metrics.monotonicity(m, x, prob, "zero", 256),
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

    b.case("faithfulness_corr", "faithfulness",  # one call: the 4 methods share the subset-removed images' passes
           lambda: {m: v.numpy() for m, v in
                    metrics.faithfulness_correlation(b.maps, x, prob, subsets=subsets).items()},
           lambda: {m: theirs_fc(v) for m, v in b.maps.items()})

    def irof_ours(m):
        rel, counts = metrics.irof_curve(m, x, prob, substrate="zero")
        return torch.tensor([s - np.trapezoid(rel[i, 1 : s + 1].numpy()) for i, s in enumerate(counts.tolist())])

    def irof_theirs(m):
        np.trapz = np.trapezoid  # Quantus 0.6 calls np.trapz, which NumPy 2.4 removed
        return b.quantus("IROF", {**zero, "return_aggregate": False}, m, softmax=True)

    b.per_method("irof", "faithfulness", irof_ours, irof_theirs,
                 "attnscope reports it normalised to [0, 1]; compared here in Quantus' units")
    levels = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    correct = evaluate.correct_class(b.model, b.y)
    b.case("road", "faithfulness",
           lambda: {m: metrics.road_curve(v, x, correct, levels, noise=0.0).mean(0).numpy() for m, v in b.maps.items()},
           lambda: {m: np.asarray(list(b.quantus("ROAD", {"normalise": False, "percentages": levels, "noise": 0.0},
                                                 v).values())) for m, v in b.maps.items()},
           "Quantus keeps the mean over images per level; noise 0 on both sides")
    g = torch.Generator().manual_seed(b.seed)
    noise = 0.2 * torch.randn(len(x), 10, *x.shape[1:], generator=g)

    def captum_infidelity(m):
        from captum.metrics import infidelity

        flat = noise.flatten(0, 1)
        return infidelity(x, lambda inputs: (flat, inputs - flat), b.model, m[:, None], target=b.y,
                          n_perturb_samples=10).double().numpy()

    b.case("infidelity (captum)", "faithfulness",  # one call: the 4 methods share the noisy images' passes
           lambda: {m: v.numpy() for m, v in metrics.infidelity(b.maps, x, logit, perturbations=noise).items()},
           lambda: {m: captum_infidelity(v) for m, v in b.maps.items()})


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
        scores = evaluate.robustness(b.model, b.x, b.how, b.y, list(ROBUST), perturbed=perturbed)
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
        r = smprt(b.model, x, b.how, targets=y, samples=noise, randomisation=Randomisation(block_seed=seed43),
                  comparison=Comparison(("spearman_abs",), calibration=(), keep=0))
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
                    emprt(b.model, x, b.how, targets=y, randomisation=Randomisation(block_seed=seed43),
                          comparison=Comparison(calibration=(), keep=0)).scores.items()},
           lambda: {m: b.quantus("EfficientMPRT", {"layer_order": "bottom_up", "seed": 42, "abs": False,
                                                   "normalise": False}, method=m) for m in METHODS})
    from quantus.functions.similarity_func import correlation_spearman

    np.random.seed(42)
    pick = torch.from_numpy(np.random.randint(0, 9, len(x)))
    other = pick + (pick >= y).long()
    b.case("random_logit", "randomisation",
           lambda: {m: v["random class"]["spearman_signed"].numpy() for m, v in
                    random_logit(b.model, x, b.how, targets=y, other=other,
                                 comparison=Comparison(("spearman_signed",), calibration=(), keep=0)).scores.items()},
           lambda: {m: b.quantus("RandomLogit", {"num_classes": 10, "seed": 42, "abs": False, "normalise": True,
                                                 "similarity_func": correlation_spearman}, method=m)
                    for m in METHODS})


def required(b: Bench, samples: int, steps: int) -> dict[str, Required]:
    """The passes each metric's definition requires at this bench's settings (`census.Required`): the
    inputs whose scores or maps it reads, each distinct input once (an input shared by the 4 methods, such
    as the image itself, the fully perturbed zero image or a map-independent perturbation, once for all)."""
    from attnscope.metrics import slic_segments

    n, k = len(b.x), len(b.maps)
    pixels = b.x[0, 0].numel()
    segs = int(sum(int(s.max()) + 1 for s in slic_segments(b.x)))
    ig = METHODS["ig"][0]["steps"]
    explained = lambda targets: explanation_passes(targets, ig)  # noqa: E731  one explain call of these rows
    pick = torch.from_numpy(np.random.RandomState(42).randint(0, 9, n))  # the random classes of `randomisation`
    other = pick + (pick >= b.y).long()
    return {
        "pixel_flipping": Required(n * k * (pixels // 64 - 1) + 1, 0, "images × methods × (steps − 1) + 1: "
                                   "64 steps of 64 px, the last one the zero image for every image"),
        "region_perturbation": Required(n * k * 63 + n + 1, 0, "the image, then 64 regions of 8 × 8 per method; "
                                        "the 64th leaves the zero image (one for all)"),
        "monotonicity": Required(n * k * 15 + n, 0, "16 steps of 256 px per method; the last is the image itself"),
        "faithfulness_corr": Required(n * (100 + 1), 0, "the image and its 100 subset-removed copies: the subsets "
                                      "are drawn per image, not per method, so the 4 methods share them"),
        "irof": Required(k * (segs - n) + n + 1, 0,
                         f"the image, then S_i − 1 partial removals per method (S = {segs} SLIC segments in all), "
                         "the last (every segment removed) the zero image"),
        "road": Required(n * k * 9, 0, "9 levels per method, each image imputed by its own map's ranking "
                         "(the imputation's linear solve is extra work, not a pass)"),
        "infidelity (captum)": Required(n * (10 + 1), 0, "the image and its 10 noisy copies, shared by the methods"),
        "robustness (5 metrics)": Required(0, explained(b.y.repeat(1 + b.n)), f"explanations of the image and its "
                                           f"{b.n} perturbed copies (their logits for ROS come with the forward)"),
        "smprt": Required(0, (steps + 1) * explained(b.y.repeat(samples)), f"{steps + 1} models (trained, then "
                          f"{steps} cascade steps) × explanations of {samples} copies"),
        "emprt": Required(0, 2 * explained(b.y), "the trained and the fully randomised model × one explanation"),
        "random_logit": Required(0, explained(torch.cat([b.y, other])),
                                 "explanations for the true and for a random class (α = 0: once per class of both)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/grey-base")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--perturbations", type=int, default=10, help="robustness: perturbed copies per image")
    parser.add_argument("--samples", type=int, default=5, help="sMPRT: noisy copies per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="localisation,faithfulness,robustness,randomisation")
    parser.add_argument("--metrics", default=None, help="only these metrics (comma-separated row names)")
    parser.add_argument("--floor", action="store_true", help="count every pass of both sides and compare with "
                        "the passes each metric requires at a measured cost per pass (bench/census.py)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--alone", action="store_true", help="each side in its own fresh process")
    parser.add_argument("--side", choices=("ours", "quantus"), default=None, help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.floor and (args.alone or args.side):
        parser.error("--floor counts both sides' passes in one process: it cannot be combined with --alone")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, header = sources.build(args.checkpoint)
    name, data_seed, data_cfg = checkpoint_data(args.checkpoint, header)
    probe = probe_from(data.get(name, "test", args.images, seed=data_seed, **data_cfg), args.images)
    built = data.mosaics(data.get(name, "test", 4 * args.images, seed=0, **data_cfg), args.images, seed=args.seed)
    started = time.perf_counter()
    census = Census(model) if args.floor else None
    b = Bench(model, probe.images, probe.labels, probe.masks, (built.images, built.labels, built.quadrants),
              args.perturbations, args.seed, census, args.side)
    b.wanted = set(args.metrics.split(",")) if args.metrics else None
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
        with census or contextlib.nullcontext():
            for name in args.only.split(","):
                parts[name](b)
    if args.side is not None:
        print(json.dumps({"side": args.side, "sides": b.sides}))
        return
    floor = None
    if args.floor:
        costs = unit_costs(model, probe.images, probe.labels)
        rows, total = floor_rows(b.rows, required(b, args.samples, len(trace_blocks(model, probe.images[:1]))), costs)
        print_floor(rows, total, costs)
        floor = {"unit_costs": costs, "rows": rows, "total": total}
    totals = {k: sum(r[k] for r in b.rows) for k in ("ours_wall", "ours_cpu", "quantus_wall", "quantus_cpu")}
    print(f"total CPU: attnscope {totals['ours_cpu']:.1f} s, Quantus {totals['quantus_cpu']:.1f} s: "
          f"{totals['quantus_cpu'] / totals['ours_cpu']:.1f}x; wall: {totals['ours_wall']:.1f} s vs "
          f"{totals['quantus_wall']:.1f} s ({time.perf_counter() - started:.0f} s in all)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": args.images, "rows": b.rows, "totals": totals, "floor": floor}, f, indent=2)


if __name__ == "__main__":
    main()
