"""How attention relates to learning (docs/learning.md): the measures of every snapshot of the study's runs.

`learning_runs.py` trains the runs and keeps their weights every third of an epoch; this script replays the
snapshots through an `AttentionTracker` with `CausalMeasures` — what the tracker would have recorded in the
loop — and adds each snapshot's accuracy on held-out images:

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/attention_and_learning.py measure
    PYTHONPATH=src python experiments/attention_and_learning.py report      # figures for docs/learning.md

`measure` writes `experiments/results/learning/<run>.json` per finished run (skipped when there), with the
snapshot series, the final accuracies and the tracker's cost beside the training's (CPU seconds). Captioners
(SAT) are measured by `learning_sat.py`. `report` draws the figures (mean over seeds with the min–max band).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import learning_runs
import torch
from safetensors.torch import load_file

from attnscope import data, fileio, models
from attnscope.track import AttentionTracker, CausalMeasures, parts_from, probe_from
from attnscope.track.causal import evaluating

RESULTS = Path("experiments/results/learning")
# Maps tracked per model: own attention, transformer maps and post-hoc maps (flow is in abnar_zuidema.py:
# at ~80 ms an image it would cost more than the training between two snapshots).
METHODS = {
    "vit": ("attention", "rollout", "grad-rollout", "gradcam", "saliency"),
    "ltpa": ("ltpa", "gradcam", "saliency"),
    "smallcnn": ("gradcam", "saliency"),
}
KIND = {"attention": "transformer", "rollout": "transformer", "grad-rollout": "transformer", "gradcam": "post-hoc",
        "saliency": "post-hoc", "ltpa": "own", "ltpa/stages.3": "own"}
PROBE, TEST, GRID, BLANKED = 64, 500, 4, 32  # probe images, held-out images, blank-out grid and images


class TimedCausal(CausalMeasures):
    """`CausalMeasures` that adds up the CPU seconds it takes (the tracker's faithfulness cost)."""

    seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, float | None]:
        started = time.process_time()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - started


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*-s[0-9]*") if (p / "done.json").exists())


def job_of(folder: Path) -> tuple[str, int]:
    done = json.loads((folder / "done.json").read_text())
    return done["job"], int(done["seed"])


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with evaluating(model):
        predicted = torch.cat([model(images[i:i + 250]).argmax(1) for i in range(0, len(images), 250)])
    return float((predicted == labels).float().mean())


def split_images(name: str, split: str, n: int, cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.get(name, split, n, seed=0, **cfg)
    samples = [ds[i] for i in range(n)]
    return torch.stack([s[0] for s in samples]), torch.tensor([int(s[1]) for s in samples])


def training_cpu_s(times: list[float]) -> float:
    """The training process's CPU seconds between the first and the last snapshot, from each snapshot's
    `time.process_time()`. A run resumed after a kill starts a new process whose clock starts again at 0: the
    interval across the resume counts as the new process's time to its first snapshot."""
    return sum(b - a if b >= a else b for a, b in zip(times, times[1:], strict=False))


def study_tracker(folder: Path, job: str, seed: int, model: str, dataset: str,
                  data_cfg: dict[str, Any]) -> tuple[AttentionTracker, TimedCausal]:
    """The study's tracker of one run (its maps and faithfulness measures on the 64-image probe) writing to
    `folder`, and its timed faithfulness measures."""
    split = learning_runs.JOBS[job].get("probe_split", "test")
    probe_data = data.get(dataset, split, PROBE, seed=0, **data_cfg)
    causal = TimedCausal(grid=GRID, images=BLANKED, parts=parts_from(probe_data, PROBE), seed=seed)
    tracker = AttentionTracker(folder, probe_from(probe_data, PROBE), METHODS[model], every=1, causal=causal,
                               seed=seed)
    return tracker, causal


def measure_run(folder: Path) -> dict[str, Any]:
    """Replay every snapshot of one classification run through the tracker; the series and the costs."""
    job, seed = job_of(folder)
    config = json.loads((folder / "config.json").read_text())
    model = models.get(config["model"], num_classes=10, **config["model_cfg"])
    split = learning_runs.JOBS[job].get("probe_split", "test")
    tracker_dir = folder / "study"
    if tracker_dir.exists():  # a replay cut short: start it again
        import shutil

        shutil.rmtree(tracker_dir)
    tracker, causal = study_tracker(tracker_dir, job, seed, config["model"], config["data"], config["data_cfg"])
    test_x, test_y = split_images(config["data"], "test", TEST, config["data_cfg"])
    clean = split_images("clutter", "test", TEST, {}) if config["data"] == "clutter-decoy" else None
    snaps = json.loads((folder / "snaps" / "snaps.json").read_text())["snaps"]
    series, maps_s = [], 0.0
    for snap in snaps:
        model.load_state_dict(load_file(str(folder / "snaps" / f"{snap['step']:06d}.safetensors")))
        before, started = causal.seconds, time.process_time()
        measures = tracker.step(model, step=snap["step"], epoch=snap["epoch"])
        maps_s += time.process_time() - started - (causal.seconds - before)
        row = {"step": snap["step"], "epoch": snap["epoch"], "test_acc": accuracy(model, test_x, test_y), **measures}
        if clean is not None:
            row["clean_acc"] = accuracy(model, *clean)
        series.append(row)
    tracker.close()
    train_s = training_cpu_s([snap["time"] for snap in snaps])
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    probe_info = {"split": split, "images": PROBE, "grid": GRID, "blanked": BLANKED}
    return {"job": job, "seed": seed, "config": config, "probe": probe_info,
            "methods": list(METHODS[config["model"]]), "series": series,
            "final": {"test_acc": metrics[-1]["test_acc"], "train_acc": metrics[-1]["train_acc"],
                      **({"clean_acc": series[-1]["clean_acc"]} if clean is not None else {})},
            "cost": {"snapshots": len(snaps), "train_cpu_s": round(train_s, 1),
                     "maps_cpu_s": round(maps_s, 1), "causal_cpu_s": round(causal.seconds, 1),
                     "causal_share": round(causal.seconds / train_s, 4),
                     "tracker_share": round((causal.seconds + maps_s) / train_s, 4)}}


def measure(args: argparse.Namespace) -> None:
    for folder in run_folders(Path(args.out)):
        job, seed = job_of(folder)
        path = Path(args.results) / f"{folder.name}.json"
        if path.exists() or learning_runs.JOBS[job]["model"] == "sat" or (args.jobs and job not in args.jobs):
            continue
        started = time.perf_counter()
        record = measure_run(folder)
        fileio.write_json(path, record)
        print(f"{folder.name}: {len(record['series'])} snapshots, tracker {record['cost']['tracker_share']:.1%} of "
              f"training (faithfulness {record['cost']['causal_share']:.1%}), {time.perf_counter() - started:.0f} s",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("measure", "report"))
    p.add_argument("--out", default="runs/learning", help="the runs of learning_runs.py")
    p.add_argument("--jobs", nargs="*", help="only these jobs (default: every finished run)")
    p.add_argument("--results", default=str(RESULTS), help="measure: where the JSONs go (a run already there is "
                   "skipped); a re-measure of the cost goes to its own folder")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.what == "measure":
        Path(args.results).mkdir(parents=True, exist_ok=True)
        measure(args)
    else:
        import learning_report

        learning_report.main(RESULTS)


if __name__ == "__main__":
    main()
