"""The tables of docs/multimodal.md from experiments/results/multimodal/*.json (`multimodal_scenes.py score`).

Every mean pools the seeds; its 95 % CI is a bootstrap over scenes (seed, image) — 2,000 resamples, percentile —
and the per-seed means are listed. Every comparison is a paired test on the same words: Wilcoxon signed-rank on
per-scene means (scipy), two-sided; against chance, the per-word excess over the box's share of the image.
Training curves come from each run's tracker store (the probe's object words, from step 0).

    PYTHONPATH=src python experiments/multimodal_tables.py > experiments/results/multimodal/tables.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

RNG = np.random.default_rng(0)


def load(folder: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*-s*.json")):
        data = json.loads(path.read_text())
        out[data["model"]].append(data)
    return out


def per_scene(runs: list[dict[str, Any]], value) -> dict[tuple[int, int], float]:
    """{(seed, image): mean over its words of value(row)} (rows where value is not None)."""
    acc: dict[tuple[int, int], list[float]] = defaultdict(list)
    for run in runs:
        for row in run["rows"]:
            v = value(row)
            if v is not None and not math.isnan(v):
                acc[(run["seed"], row["image"])].append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def boot(values: dict[tuple[int, int], float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean over scenes and its 95 % percentile bootstrap CI."""
    v = np.array(list(values.values()))
    means = [RNG.choice(v, len(v)).mean() for _ in range(2000)]
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired(a: dict, b: dict) -> tuple[float, int]:
    """Wilcoxon signed-rank p-value on the scenes both have, and their count."""
    keys = sorted(set(a) & set(b))
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    if np.allclose(x, y):
        return 1.0, len(keys)
    return float(stats.wilcoxon(x, y).pvalue), len(keys)


def fmt(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"


def seeds_of(runs: list[dict[str, Any]], value) -> str:
    return ", ".join(f"{np.mean([value(r) for r in run['rows'] if value(r) is not None]):.3f}" for run in
                     sorted(runs, key=lambda r: r["seed"]))


def grounding(data: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| model | method | pointing [95 % CI] | energy [95 % CI] | pointing per seed | p vs chance |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, runs in data.items():
        chance = per_scene(runs, lambda r: r["area"])
        lines.append(f"| {model} | chance (box share) | {fmt(boot(chance))} | {fmt(boot(chance))} | "
                     f"{seeds_of(runs, lambda r: r['area'])} | |")
        for m in runs[0]["methods"]:
            point = per_scene(runs, lambda r, m=m: r[m]["pointing"])
            energy = per_scene(runs, lambda r, m=m: r[m]["energy"])
            p, _ = paired(point, chance)
            lines.append(f"| {model} | {m} | {fmt(boot(point))} | {fmt(boot(energy))} | "
                         f"{seeds_of(runs, lambda r, m=m: r[m]['pointing'])} | {p:.2g} |")
    return "\n".join(lines)


def comparisons(data: dict[str, list[dict[str, Any]]], pairs: list[tuple[str, str, str, str]]) -> str:
    lines = ["| A | B | pointing A − B | p (Wilcoxon, paired scenes) | scenes |", "| --- | --- | --- | --- | --- |"]
    for ma, a, mb, b in pairs:
        if ma not in data or mb not in data:
            continue
        x = per_scene(data[ma], lambda r, a=a: r[a]["pointing"])
        y = per_scene(data[mb], lambda r, b=b: r[b]["pointing"])
        keys = sorted(set(x) & set(y))
        diff = {k: x[k] - y[k] for k in keys}
        p, n = paired(x, y)
        lines.append(f"| {ma} {a} | {mb} {b} | {fmt(boot(diff))} | {p:.2g} | {n} |")
    return "\n".join(lines)


def causal(data: dict[str, list[dict[str, Any]]]) -> str:
    """ρ_named: Spearman over all words of the energy in the named object's box and the drop when it is removed;
    single deletion: per word, Spearman over the scene's objects of mass_j and drop_j (mean)."""
    lines = ["| model | method | ρ named (pooled words) [95 % CI] | single deletion [95 % CI] | top object agrees |",
             "| --- | --- | --- | --- | --- |"]
    for model, runs in data.items():
        rows = [(run["seed"], r) for run in runs for r in run["rows"]]
        for m in runs[0]["methods"]:
            energy = np.array([r[m]["energy"] for _, r in rows])
            drop = np.array([r["drops"][r["object"]] for _, r in rows])
            rho = stats.spearmanr(energy, drop).statistic
            boots = []
            for _ in range(500):
                idx = RNG.integers(0, len(rows), len(rows))
                boots.append(stats.spearmanr(energy[idx], drop[idx]).statistic)
            single = per_scene(runs, lambda r, m=m: _single(r[m]["masses"], r["drops"]))
            top = per_scene(runs, lambda r, m=m: float(np.argmax(r[m]["masses"]) == np.argmax(r["drops"])))
            lines.append(f"| {model} | {m} | {rho:.3f} [{np.nanpercentile(boots, 2.5):.3f}, "
                         f"{np.nanpercentile(boots, 97.5):.3f}] | {fmt(boot(single))} | {fmt(boot(top))} |")
    return "\n".join(lines)


def _single(masses: list[float], drops: list[float]) -> float | None:
    if len(masses) < 3 or np.ptp(masses) == 0 or np.ptp(drops) == 0:
        return None  # Spearman over fewer than three objects is ±1 only
    return float(stats.spearmanr(masses, drops).statistic)


def trust(data: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| model | method | test | Spearman ρ of the maps [95 % CI] | n | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, runs in data.items():
        for m in runs[0]["methods"]:
            tests = runs[0]["trust"][m]
            for test in tests:
                values = [v for run in runs for v in run["trust"][m].get(test, []) if not math.isnan(v)]
                if not values:
                    continue
                v = np.array(values)
                means = [RNG.choice(v, len(v)).mean() for _ in range(2000)]
                low, high = np.percentile(means, 2.5), np.percentile(means, 97.5)
                verdict = "passes (ρ < 0.5)" if high < 0.5 else "fails (ρ > 0.5)" if low > 0.5 else "unclear"
                lines.append(f"| {model} | {m} | {test} | {v.mean():.3f} [{low:.3f}, {high:.3f}] | {len(v)} | "
                             f"{verdict} |")
    return "\n".join(lines)


def dynamics(runs_folder: Path, seeds: dict[str, list[int]]) -> str:
    """Tracker curves of the scored seeds only (a run cut short would average into its first epochs)."""
    from attnscope.track.store import TrackStore

    lines = ["| model | method | " + " | ".join(f"epoch {e}" for e in range(7)) + " |", "| --- " * 9 + "|"]
    for model, scored in seeds.items():
        series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for folder in (runs_folder / f"{model}-s{seed}" for seed in sorted(scored)):
            if not (folder / "track").exists():
                continue
            store = TrackStore.open(folder / "track")
            for entry in store.snapshots:
                if entry["kind"] != "epoch":
                    continue
                for key, value in entry["measures"].items():
                    if key.endswith("/pointing@box") and value is not None:
                        series[key.split("/")[0]][entry["epoch"]].append(value)
        for method, by_epoch in series.items():
            cells = [f"{np.mean(by_epoch[e]):.3f}" if by_epoch.get(e) else "–" for e in range(7)]
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="experiments/results/multimodal")
    p.add_argument("--runs", default="runs/mm")
    args = p.parse_args()
    data = load(Path(args.results))
    caption = {k: v for k, v in data.items() if k != "clip"}
    print("## Grounding per word\n\n" + grounding(data) + "\n")
    print("## Paired comparisons\n\n" + comparisons(data, [
        ("captioner", "attnlrp", "sat", "alpha"), ("captioner", "attnlrp", "sat", "gradcam"),
        ("captioner", "inputxgrad", "sat", "inputxgrad"), ("captioner", "attnlrp", "captioner", "inputxgrad"),
        ("captioner", "chefer-mm", "sat", "alpha"), ("captioner", "alpha", "sat", "alpha"),
        ("captioner", "gradcam", "sat", "gradcam"), ("captioner", "chefer-mm", "captioner", "alpha"),
        ("captioner", "gradcam", "captioner", "alpha"), ("captioner", "attnlrp", "captioner", "alpha"),
        ("sat", "gradcam", "sat", "alpha"), ("clip", "chefer-mm", "clip", "attention"),
        ("clip", "gradcam", "clip", "attention"), ("clip", "legrad", "clip", "attention")]) + "\n")
    print("## Causal faithfulness\n\n" + causal(data) + "\n")
    print("## Trust\n\n" + trust(data) + "\n")
    print("## Training (tracker probe, pointing per object word, mean over seeds)\n\n"
          + dynamics(Path(args.runs), {k: [run["seed"] for run in v] for k, v in caption.items()}) + "\n")


if __name__ == "__main__":
    main()
