"""Result tables generated into the docs (`claims.block`): numbers with hierarchical-bootstrap CIs over seeds and
images, straight from experiments/results, so no doc table can drift from its results."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

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
    seeds, methods = _az("vit-r0-clutter")
    col = lambda m, key: [_nan(s["methods"][m][key]) for s in seeds]  # noqa: E731
    n = len(seeds[0]["methods"]["attention"]["energy"])
    lines = [f"TinyViT (no registers), {len(seeds)} seeds ({', '.join(str(s['seed']) for s in seeds)}; test accuracy "
             + ", ".join(f"{s['test_acc']:.3f}" for s in seeds) + f"), {n} test images each, true class. "
             "Mean over seeds of the image means, hierarchical bootstrap 95 % CI (seeds, then images). "
             "ρ: Spearman per image over the 64 patches.", "",
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
            cells += [_ci(d), stats.p_text(t.p) if len(seeds) > 1 else "1 seed"]
        lines.append(f"| {AZ_NAMES.get(m, m)} − raw attention | " + " | ".join(cells) + " |")
    return "\n".join(lines)
