"""The study's figures and timing numbers (docs/learning.md), from experiments/results/learning/*.json.

    PYTHONPATH=src python experiments/attention_and_learning.py report

Timing: a series' *half-rise epoch* is the first snapshot at which it has covered half of its way from its first
value to its final one (rising or falling), or to its peak for the decoy's onsets (maps turn to the patch and
away); a map "becomes faithful before, with or after accuracy" by the sign of the lag between the half-rise of
its blank-out correlation and that of the held-out accuracy, tested over seeds (one-sample t-test against 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path("experiments/results/learning")
FIGURES = Path("docs/img")


def records(job: str, results: Path = RESULTS) -> list[dict[str, Any]]:
    """The measured runs of `job`, by seed."""
    out = []
    for f in sorted(results.glob(f"{job.replace('/', '-')}-s[0-9]*.json")):
        r = json.loads(f.read_text())
        if r.get("job") == job:
            out.append(r)
    return sorted(out, key=lambda r: r["seed"])


def series(record: dict[str, Any], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one measure; snapshots where it is undefined are left out."""
    pts = [(s["epoch"], s[key]) for s in record["series"] if s.get(key) is not None]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def half_rise(epochs: Sequence[float], values: Sequence[float], falling: bool | None = None,
              to: str = "final") -> float:
    """The first epoch at which `values` have covered half the way from the first value to the last (`to="peak"`:
    to the extreme; `falling`: None reads the direction from them). NaN for a series that does not move."""
    if not values:
        return math.nan
    v0 = values[0]
    if to == "peak":
        end = min(values) if falling else max(values)
    else:
        end = values[-1]
    if end == v0:
        return math.nan
    falling = end < v0 if falling is None else falling
    half = v0 + 0.5 * (end - v0)
    for e, v in zip(epochs, values, strict=True):
        if (v <= half) if falling else (v >= half):
            return float(e)
    return math.nan


def lag(record: dict[str, Any], key: str, reference: str = "test_acc", falling: bool | None = None,
        to: str = "final") -> float:
    """Half-rise epoch of `key` minus that of `reference` in one run (`to`: the final value or the peak)."""
    return half_rise(*series(record, key), falling=falling, to=to) - half_rise(*series(record, reference), to=to)


def figure(path: Path, panels: Sequence[tuple[str, Sequence[tuple[str, str, Callable | None]]]],
           jobs: Sequence[str], results: Path = RESULTS) -> None:
    """One row of panels per job; each panel: (title, [(label, measure key, transform)]), mean over seeds with
    the min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(jobs), len(panels), figsize=(3.6 * len(panels), 2.6 * len(jobs)), squeeze=False)
    for row, job in enumerate(jobs):
        runs = records(job, results)
        for col, (title, curves) in enumerate(panels):
            ax = axes[row][col]
            for label, key, fn in curves:
                per_seed = [series(r, key) for r in runs]
                per_seed = [(e, [fn(v) if fn else v for v in vs]) for e, vs in per_seed if vs]
                if not per_seed:
                    continue
                n = min(len(vs) for _, vs in per_seed)
                x = np.array(per_seed[0][0][:n])
                y = np.array([vs[:n] for _, vs in per_seed])
                ax.plot(x, y.mean(0), label=label, lw=1.5)
                ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
            seeds = f"{len(runs)} seed{'s' * (len(runs) != 1)}"
            ax.set_title(f"{job} ({seeds}): {title}" if col == 0 else title, fontsize=8)
            ax.set_xlabel("epoch", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


VIT_PANELS = [("accuracy", [("held-out", "test_acc", None), ("probe", "probe_acc", None)]),
              ("ρ with blank-out", [(m, f"{m}/blankout_rho", None) for m in
                                    ("attention", "rollout", "grad-rollout", "gradcam", "saliency")]),
              ("sinks", [("CLS→extra tokens", "sinks/prefix_share", None),
                         ("CLS→background patches", "sinks/background_share", None),
                         ("patch norm outliers", "sinks/norm_outliers", None)])]
LTPA_PANELS = [("accuracy", [("held-out", "test_acc", None), ("probe", "probe_acc", None)]),
               ("ρ with blank-out", [(m, f"{m}/blankout_rho", None) for m in
                                     ("ltpa", "ltpa/stages.3", "gradcam", "saliency")]),
               ("own attention used", [("uniform α: logit drop", "own/gap@uniform", None),
                                       ("permuted α: logit drop", "own/gap@permuted", None)])]
DECOY_PANELS = [("accuracy", [("probe (train, patch informative)", "probe_acc", None),
                              ("held-out, patch random", "test_acc", None), ("held-out, no patch", "clean_acc", None)]),
                ("the patch: causal weight", [("logit drop without the patch", "parts/drop@decoy", None),
                                              ("without the digit", "parts/drop@digit", None)]),
                ("the patch in the maps", [("Grad-CAM pointing", "gradcam/pointing@decoy", None),
                                           ("saliency pointing", "saliency/pointing@decoy", None),
                                           ("LTPA pointing", "ltpa/pointing@decoy", None),
                                           ("blank-out pointing", "blankout/pointing@decoy", None)])]
SAT_PANELS = [("learning", [("object-word accuracy", "word_acc", None)]),
              ("attention", [("grounding_ref", "grounding_ref", None),
                             ("top object = most needed", "parts_top", None)]),
              ("use of attention", [("uniform-α gap (nats)", "uniform_gap", None),
                                    ("named object's weight (nats)", "named_drop", None)])]


def main(results: Path = RESULTS) -> None:
    made = []
    for name, panels, jobs in (("learning_vit", VIT_PANELS, ("vit-r0/clutter", "vit-r4/clutter")),
                               ("learning_ltpa", LTPA_PANELS, ("ltpa/clutter",)),
                               ("learning_decoy", DECOY_PANELS, ("cnn/decoy", "ltpa/decoy")),
                               ("learning_sat", SAT_PANELS, ("sat/scenes",))):
        jobs = [j for j in jobs if records(j, results)]
        if jobs:
            figure(FIGURES / f"{name}.png", panels, jobs, results)
            made.append(name)
    print("figures:", ", ".join(made) or "none (no measured runs)")
