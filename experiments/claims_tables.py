"""Result tables generated into the docs (`claims.block`): numbers with hierarchical-bootstrap CIs over seeds and
images, straight from experiments/results, so no doc table can drift from its results."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from claims import Missing, block, load

from attnscope import stats


def _ci(per_seed: Sequence[Sequence[float]], digits: int = 2) -> str:
    """Mean over seeds of the image means, with the hierarchical bootstrap 95 % CI (seeds, then images)."""
    return stats.fmt(stats.bootstrap_seeds(per_seed, resamples=4000), digits)


def _diff(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[list[float]]:
    """Per seed, the per-image differences a − b (NaN where either is undefined)."""
    return [[x - y for x, y in zip(sa, sb, strict=True)] for sa, sb in zip(a, b, strict=True)]


def _seed_means(per_seed: Sequence[Sequence[float]]) -> list[float]:
    import math

    return [statistics.mean([v for v in s if not math.isnan(v)]) for s in per_seed]


AZ_NAMES = {"attention": "raw attention (last layer)", "rollout": "rollout", "flow": "flow",
            "grad-rollout": "grad-rollout (Chefer et al., ICCV 2021)",
            "attnlrp": "AttnLRP (Achtibat et al., ICML 2024)",
            "chefer": "Chefer et al. (CVPR 2021)", "gradcam": "Grad-CAM (post-hoc)", "saliency": "saliency (post-hoc)"}


def _az(job: str) -> tuple[list[dict], list[str]]:
    seeds = [r for r in load("abnar_zuidema.json")["seeds"] if r.get("job") == job]
    if len(seeds) < 1:
        raise Missing(f"abnar_zuidema.json ({job})")
    return seeds, list(seeds[0]["methods"])


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


@block("abnar_zuidema")
def abnar_zuidema() -> str:
    return _az_table("vit-r0-clutter", "TinyViT (no registers)")


@block("abnar_zuidema_registers")
def abnar_zuidema_registers() -> str:
    return _az_table("vit-r4-clutter", "TinyViT with 4 registers")


def _az_table(job: str, name: str) -> str:
    seeds, methods = _az(job)
    col = lambda m, key: [_nan(s["methods"][m][key]) for s in seeds]  # noqa: E731
    n = len(seeds[0]["methods"]["attention"]["energy"])
    spread = ("Mean over seeds of the image means, hierarchical bootstrap 95 % CI (seeds, then images)."
              if len(seeds) > 1 else "1 seed, not tested: the image mean with a bootstrap 95 % CI over images only.")
    lines = [f"{name}, {len(seeds)} seed{'s' * (len(seeds) > 1)} ({', '.join(str(s['seed']) for s in seeds)}; "
             "test accuracy " + ", ".join(f"{s['test_acc']:.3f}" for s in seeds) + f"), {n} test images each, "
             f"true class. {spread} ρ: Spearman per image over the 64 patches.", "",
             "| method | ρ with blank-out | ρ with input gradient | pointing game | energy in box |",
             "| --- | --- | --- | --- | --- |"]
    for m in methods:
        lines.append(f"| {AZ_NAMES.get(m, m)} | {_ci(col(m, 'blankout_rho'))} | {_ci(col(m, 'gradient_rho'))} | "
                     f"{_ci(col(m, 'pointing'))} | {_ci(col(m, 'energy'))} |")
    ref = [_nan(s["reference_agreement"]) for s in seeds]
    lines += ["", f"The two references agree with each other at ρ = {_ci(ref)} (blank-out vs input gradient).",
              "",
              "Differences from raw attention (per image, then as above; the paired t-test over the seeds' means):",
              "", "| comparison | Δρ with blank-out | test | Δρ with input gradient | test |",
              "| --- | --- | --- | --- | --- |"]
    for m in [m for m in methods if m != "attention"]:
        cells = []
        for key in ("blankout_rho", "gradient_rho"):
            d = _diff(col(m, key), col("attention", key))
            t = stats.paired_t(_seed_means(col(m, key)), _seed_means(col("attention", key)))
            cells += [_ci(d), stats.p_text(t.p) if len(seeds) > 1 else "1 seed, not tested"]
        lines.append(f"| {AZ_NAMES.get(m, m)} − raw attention | " + " | ".join(cells) + " |")
    return "\n".join(lines)


POOLING = (("cnn", "CNN, global average pooling", "cnn grad-cam (features.3.2)", "ltpa_clutter.json"),
           ("gmp-cnn", "CNN, global max pooling", "gmp-cnn grad-cam (features.3.2)", "ltpa_pooling.json"),
           ("attention-pool", "one attention-pooling head (8×8)", "attention-pool ltpa", "ltpa_pooling.json"),
           ("att3-pc-softmax-nog", "LTPA att3 without g", "att3-pc-softmax-nog ltpa/stages.3", "ltpa_pooling.json"),
           ("att2-pc-softmax", "LTPA att2", "att2-pc-softmax ltpa/stages.3", "ltpa_clutter.json"),
           ("att3-pc-softmax", "LTPA att3", "att3-pc-softmax ltpa/stages.3", "ltpa_clutter.json"))


@block("ltpa_pooling")
def ltpa_pooling() -> str:
    from claims import by_seed, paired, runs

    lines = ["Test accuracy and the 8×8 map's localisation (the CNNs: Grad-CAM at their 8×8 layer; the attention "
             "models: their 8×8 attention), mean over seeds with the Student-t 95 % CI over seeds; the last column "
             "compares accuracy with LTPA att3 (paired t-test over seeds).", "",
             "| model | seeds | test accuracy (%) | 8×8 map: energy in box | pointing (%) | accuracy vs att3 |",
             "| --- | --- | --- | --- | --- | --- |"]
    att3 = by_seed(runs("ltpa_clutter.json"), lambda r: r["test_acc"], variant="att3-pc-softmax")
    for variant, name, row, path in POOLING:
        records = runs(path)
        acc = by_seed(records, lambda r: 100 * r["test_acc"], variant=variant)
        energy = by_seed(records, lambda r, row=row: r["maps"][row]["energy"], variant=variant)
        point = by_seed(records, lambda r, row=row: 100 * r["maps"][row]["pointing"], variant=variant)
        if variant == "att3-pc-softmax":
            test = "–"
        else:
            a, b, _ = paired({s: v / 100 for s, v in acc.items()}, att3)
            t = stats.paired_t(a, b)
            test = f"{100 * t.effect:+.1f} pts, {stats.p_text(t.p)}"
        lines.append(f"| {name} | {len(acc)} | {stats.fmt(stats.t_interval(list(acc.values())), 1)} | "
                     f"{stats.fmt(stats.t_interval(list(energy.values())))} | "
                     f"{stats.fmt(stats.t_interval(list(point.values())), 0)} | {test} |")
    return "\n".join(lines)


def learning_runs(job: str) -> dict[int, dict]:
    """{seed: record} of the study's measured runs of `job` (experiments/results/learning/<job>-s<seed>.json)."""
    import json

    from claims import RESULTS

    found = {}
    for f in sorted((RESULTS / "learning").glob(f"{job.replace('/', '-')}-s[0-9]*.json")):
        r = json.loads(f.read_text())
        if r.get("job") == job:
            found[int(r["seed"])] = r
    if not found:
        raise Missing(f"learning/{job.replace('/', '-')}-s*.json")
    return found


GUIDES = (("cnn/decoy", "no guidance"), ("cnn-cam/decoy", "`cam`, λ = 1, digit's box"),
          ("cnn-rrr10/decoy", "`rrr`, λ = 10, digit's box"),
          ("cnn-rrr100-notdecoy/decoy", "`rrr`, λ = 100, not-decoy"),
          ("cnn-rrr10-notdecoy/decoy", "`rrr`, λ = 10, not-decoy"),
          ("cnn-cam-notdecoy/decoy", "`cam`, λ = 1, not-decoy"))
GUIDE_COLUMNS = (("test acc, patch random", lambda r: r["final"]["test_acc"], 3),
                 ("clean test acc", lambda r: r["final"]["clean_acc"], 3),
                 ("patch cost (clean − random)", lambda r: r["final"]["clean_acc"] - r["final"]["test_acc"], 3),
                 ("Grad-CAM pointing on patch", lambda r: r["series"][-1]["gradcam/pointing@decoy"], 2),
                 ("Grad-CAM energy in digit box", lambda r: r["series"][-1]["gradcam/energy_box@box"], 2),
                 ("patch's causal weight (logit drop)", lambda r: r["series"][-1]["parts/drop@decoy"], 2))


@block("guidance_seeds")
def guidance_seeds() -> str:
    base = learning_runs("cnn/decoy")
    lines = ["| run | seeds | " + " | ".join(c for c, _, _ in GUIDE_COLUMNS) + " | random-patch acc vs none |",
             "| --- " * (len(GUIDE_COLUMNS) + 3) + "|"]
    for job, name in GUIDES:
        try:
            runs_ = learning_runs(job)
        except Missing:
            lines.append(f"| {name} | 0 | " + " | ".join("not run" for _ in GUIDE_COLUMNS) + " | – |")
            continue
        cells = [stats.fmt(stats.t_interval([f(r) for r in runs_.values()]), d) for _, f, d in GUIDE_COLUMNS]
        if job == "cnn/decoy":
            test = "–"
        else:
            seeds = sorted(set(runs_) & set(base))
            t = stats.paired_t([runs_[s]["final"]["test_acc"] for s in seeds],
                               [base[s]["final"]["test_acc"] for s in seeds])
            test = f"{t.effect:+.3f}, {stats.p_text(t.p)}" if len(seeds) > 1 else "1 seed, not tested"
        lines.append(f"| {name} | {len(runs_)} | " + " | ".join(cells) + f" | {test} |")
    return "\n".join(lines)


ADEBAYO_METHODS = ("saliency", "gradcam", "guided-backprop", "guided-gradcam")
ADEBAYO_STEPS = (("net.classifier", "classifier"), ("net.conv_head", "head (down to conv_head)"),
                 ("net.blocks.3", "down to blocks.3"), ("net.conv_stem", "all (down to conv_stem)"))


def adebayo_runs(init: str) -> list[dict]:
    import json

    from claims import RESULTS

    found = [json.loads(f.read_text()) for f in sorted((RESULTS / "adebayo_crops").glob(f"{init}-s[0-9]*.json"))]
    if not found:
        raise Missing(f"adebayo_crops/{init}-s*.json")
    return found


def adebayo_values(runs_: list[dict], method: str, step: str, to: str = "to_trained",
                   metric: str = "spearman_abs") -> list[list[float]]:
    return [_nan(r[to][method][step][metric]) for r in runs_]


@block("adebayo_crops")
def adebayo_crops() -> str:
    lines = []
    for init in ("default", "trunc-normal"):
        try:
            runs_ = adebayo_runs(init)
        except Missing as e:
            lines += [f"**{init}**: not run yet ({e.args[0]} is missing).", ""]
            continue
        n = len(runs_[0]["to_trained"]["saliency"]["net.classifier"]["spearman_abs"])
        seeds = f"{len(runs_)} seeds" if len(runs_) > 1 else "1 seed, not tested: the CIs are over crops only"
        lines += [f"**{init} re-initialisation** ({seeds}; {n} crops): similarity to the trained "
                  "model's map, and to the input's edge map (trained → all randomised)", "",
                  "| method | " + " | ".join(name for _, name in ADEBAYO_STEPS) + " | edges: trained | edges: all |",
                  "| --- " * (len(ADEBAYO_STEPS) + 3) + "|"]
        for m in ADEBAYO_METHODS:
            cells = [_ci(adebayo_values(runs_, m, step)) for step, _ in ADEBAYO_STEPS]
            cells += [_ci(adebayo_values(runs_, m, "trained", "to_edges")),
                      _ci(adebayo_values(runs_, m, "net.conv_stem", "to_edges"))]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _per_job(jobs: Sequence[str], read: Callable[[str], list], pattern: str) -> list[tuple[str, list]]:
    """(job, read(job)) for each job whose results exist; `Missing(pattern)` when none does."""
    found = []
    for job in jobs:
        try:
            found.append((job, read(job)))
        except Missing:
            continue
    if not found:
        raise Missing(pattern)
    return found


COST_JOBS = ("vit-r0/clutter", "vit-r4/clutter", "ltpa/clutter", "cnn/decoy", "ltpa/decoy", "cnn-cam/decoy",
             "cnn-rrr10/decoy", "cnn-rrr100-notdecoy/decoy", "cnn-cam-notdecoy/decoy", "sat/scenes")


@block("learning_cost")
def learning_cost() -> str:
    lines = ["| run | seeds | steps between snapshots | snapshots | training CPU s | maps CPU s | faithfulness CPU s | "
             "faithfulness / training | maps + faithfulness / training |", "| --- " * 9 + "|"]
    for job, runs_ in _per_job(COST_JOBS, lambda job: list(learning_runs(job).values()), "learning/*.json"):
        c = [r["cost"] for r in runs_]
        mean = lambda k, c=c: statistics.mean(x.get(k, 0.0) for x in c)  # noqa: E731
        steps = runs_[0]["series"][1]["step"] - runs_[0]["series"][0]["step"]
        causal = mean("causal_cpu_s") if "causal_cpu_s" in c[0] else mean("measure_cpu_s")
        maps = mean("maps_cpu_s") if "maps_cpu_s" in c[0] else 0.0
        lines.append(f"| {job} | {len(runs_)} | {steps} | {int(mean('snapshots'))} | {mean('train_cpu_s'):.0f} | "
                     f"{maps:.0f} | {causal:.0f} | {100 * causal / mean('train_cpu_s'):.1f} % | "
                     f"{100 * (causal + maps) / mean('train_cpu_s'):.1f} % |")
    lines += ["", "(Means over the seeds. sat/scenes: its snapshot measures of `learning_sat.py` — teacher-forced "
              "passes, object removal, uniform α — are all counted as faithfulness.)"]
    return "\n".join(lines)


TRACKED_JOBS = ("ltpa/clutter", "ltpa/decoy", "cnn/decoy", "cnn-cam/decoy", "cnn-cam-notdecoy/decoy",
                "cnn-rrr10/decoy", "cnn-rrr100-notdecoy/decoy")


@block("learning_cost_tracked")
def learning_cost_tracked() -> str:
    """The tracker's cost measured in the training process (`learning_runs.py --tracked`), per job over seeds."""
    import json

    from claims import RESULTS

    lines = ["| run | seeds | training CPU s | maps CPU s | faithfulness CPU s | faithfulness / training (95 % CI) | "
             "per seed | against 10 % | maps + faithfulness / training |", "| --- " * 9 + "|"]
    def tracked(job: str) -> list[dict]:
        files = sorted((RESULTS / "learning_cost_tracked").glob(f"{job.replace('/', '-')}-s[0-9]*.json"))
        if not files:
            raise Missing(f"learning_cost_tracked/{job.replace('/', '-')}-s*.json")
        return [json.loads(f.read_text())["cost"] for f in files]

    for job, c in _per_job(TRACKED_JOBS, tracked, "learning_cost_tracked/*.json"):
        share = [x["causal_share"] for x in c]
        mean = lambda k, c=c: statistics.mean(x[k] for x in c)  # noqa: E731
        test = stats.paired_t(share, [0.10] * len(share))
        per_seed = ", ".join(f"{100 * v:.1f}" for v in share)
        versus = f"{'below' if test.statistic < 0 else 'above'}, p = {stats.fmt_p(test.p)}" if len(share) > 1 \
            else "1 seed, not tested"
        lines.append(f"| {job} | {len(c)} | {mean('train_cpu_s'):.0f} | {mean('maps_cpu_s'):.1f} | "
                     f"{mean('causal_cpu_s'):.1f} | {_pct(stats.t_interval(share))} | {per_seed} % | {versus} | "
                     f"{100 * statistics.mean(x['tracker_share'] for x in c):.1f} % |")
    lines += ["", "(Each run trained with the study's tracker in its own process, `learning_runs.py --tracked`; shares "
              "are each run's faithfulness CPU over its training CPU between the first and the last snapshot, the "
              "tracker's own taken out; CI: Student t over the seeds; \"against 10 %\": paired t-test of the "
              "per-seed shares against 0.10.)"]
    return "\n".join(lines)


def _pct(interval: stats.Interval) -> str:
    """A share's interval in per cent: mean [low, high] %."""
    if interval.n < 2:
        return f"{100 * interval.mean:.1f} % (1 seed)"
    return f"{100 * interval.mean:.1f} % [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


SUMMARY_JOBS = (("vit-r0/clutter", ("attention", "rollout", "grad-rollout", "gradcam", "saliency")),
                ("vit-r4/clutter", ("attention", "rollout", "grad-rollout", "gradcam", "saliency")),
                ("ltpa/clutter", ("ltpa", "ltpa/stages.3", "gradcam", "saliency")),
                ("ltpa/decoy", ("ltpa", "ltpa/stages.3", "gradcam", "saliency")),
                ("cnn/decoy", ("gradcam", "saliency")))


@block("learning_summary")
def learning_summary() -> str:
    import learning_report

    lines = ["| run | seeds | held-out accuracy (end) | half-rise of accuracy (epoch) | map | ρ with blank-out (end) | "
             "half-rise of ρ (epoch) | lag ρ − accuracy (epochs) |", "| --- " * 8 + "|"]
    found = False
    for job, maps in SUMMARY_JOBS:
        try:
            runs_ = list(learning_runs(job).values())
        except Missing:
            continue
        found = True
        acc = stats.fmt(stats.t_interval([r["series"][-1]["test_acc"] for r in runs_]), 3)
        acc_t = stats.fmt(stats.t_interval([learning_report.half_rise(*learning_report.series(r, "test_acc"))
                                            for r in runs_]))
        for i, m in enumerate(maps):
            key = f"{m}/blankout_rho"
            rho = stats.fmt(stats.t_interval([r["series"][-1].get(key) or float("nan") for r in runs_]))
            rise = stats.fmt(stats.t_interval([learning_report.half_rise(*learning_report.series(r, key))
                                               for r in runs_]))
            lag = stats.fmt(stats.t_interval([learning_report.lag(r, key) for r in runs_]))
            head = f"| {job} | {len(runs_)} | {acc} | {acc_t} |" if i == 0 else "| | | | |"
            lines.append(f"{head} {m} | {rho} | {rise} | {lag} |")
    if not found:
        raise Missing("learning/*.json")
    return "\n".join(lines)
