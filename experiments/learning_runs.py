"""The training runs of the attention-and-learning study (docs/learning.md): one job at a time, resumable.

Each run is `attnscope.train.fit` with one extra callback that saves the model's weights at step 0, every
third of an epoch and at every epoch end (`<out>/<job>-s<seed>/snaps/<step>.safetensors` and `snaps.json`).
What is measured on those snapshots (maps, faithfulness, sinks) is computed afterwards by
`attention_and_learning.py measure`, exactly as an `AttentionTracker` would have computed it in the loop
(the tracker is a pure function of the weights and the probe), so training never waits for measure code.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/learning_runs.py \\
        --jobs vit-r0/clutter vit-r4/clutter --seeds 0 1 2

A finished run (its `done.json` written) is skipped; an interrupted one resumes from its last epoch.

`--tracked RESULTS` trains the same runs with the study's tracker *in* the training process instead (no
snapshots kept) and writes what it cost there — faithfulness and maps CPU against the training's — to
`RESULTS/<run>.json` (bench/README.md, the tracker's faithfulness cost):

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src:experiments python experiments/learning_runs.py \
        --out runs/learning_tracked --tracked experiments/results/learning_cost_tracked --jobs cnn/decoy --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from attnscope import fileio
from attnscope.train import TrainConfig, fit

VIT = {"model": "vit", "weight_decay": 0.05}
CNN = {"model": "smallcnn", "model_cfg": {"widths": [16, 32, 64, 128]}}
CLUTTER = {"data": "clutter", "n": 20000, "epochs": 5}
DECOY = {"data": "clutter-decoy", "n": 4000, "epochs": 5, "probe_split": "train"}
# The SAT encoder, decoder and budget of experiments/sat_grounding.py (frozen (digit, colour) SmallCNN, 8x8 grid;
# 8,000 scenes, 6 epochs), so that the study's captioner is docs/sat.md's "soft" row, measured during training.
SAT = {"model": "sat", "data": "scenes", "n": 8000, "epochs": 6, "batch_size": 32, "data_cfg": {"size": 64,
       "digit_size": [15, 23]}, "model_cfg": {"attention": "soft", "freeze_encoder": True, "dropout": 0.1,
       "embed_dim": 32, "hidden_dim": 128, "attn_dim": 64, "encoder_widths": [16, 32, 64, 128], "max_len": 20},
       "task_cfg": {"doubly_stochastic": 1.0, "eval_n": 100}, "encoder": True}

# job name → TrainConfig fields (+ "probe_split": where the study's probe comes from; "encoder": SAT's)
JOBS: dict[str, dict[str, Any]] = {
    "vit-r0/clutter": {**VIT, **CLUTTER},
    "vit-r4/clutter": {**VIT, **CLUTTER, "model_cfg": {"registers": 4}},
    "ltpa/clutter": {"model": "ltpa", "data": "clutter", "n": 6000, "epochs": 4},
    "ltpa/decoy": {"model": "ltpa", **DECOY},
    "cnn/decoy": {**CNN, **DECOY},
    "cnn-cam/decoy": {**CNN, **DECOY, "guide": "cam", "guide_weight": 1.0},
    "cnn-rrr10/decoy": {**CNN, **DECOY, "guide": "rrr", "guide_weight": 10.0},
    "cnn-rrr100-notdecoy/decoy": {**CNN, **DECOY, "guide": "rrr", "guide_weight": 100.0, "guide_region": "not-decoy"},
    "cnn-rrr10-notdecoy/decoy": {**CNN, **DECOY, "guide": "rrr", "guide_weight": 10.0, "guide_region": "not-decoy"},
    "cnn-cam-notdecoy/decoy": {**CNN, **DECOY, "guide": "cam", "guide_weight": 1.0, "guide_region": "not-decoy"},
    "vit-r0/decoy": {**VIT, **DECOY, "n": 8000},
    "sat/scenes": SAT,
}
STUDY_ONLY = ("probe_split", "encoder")


class SnapshotSaver:
    """A `fit` callback: the model's weights at step 0, every `every` steps and at every epoch end."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = folder, every
        self.index: dict[str, Any] = json.loads((folder / "snaps.json").read_text()) if (
            folder / "snaps.json").exists() else {"every": every, "snaps": []}

    def on_fit_start(self, run: Any) -> None:
        self.steps_per_epoch = -(-len(run.train_data) // run.config.batch_size)
        self.index["snaps"] = [s for s in self.index["snaps"] if s["step"] <= run.step]  # resumed: redo the rest
        if run.step == 0:
            self._save(run, "init")

    def on_step_end(self, run: Any) -> None:
        if run.step % self.every == 0:
            self._save(run, "step")

    def on_epoch_end(self, run: Any) -> None:
        if not any(s["step"] == run.step for s in self.index["snaps"]):
            self._save(run, "epoch")

    def _save(self, run: Any, kind: str) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
        save_file(state, str(self.folder / f"{run.step:06d}.safetensors"))
        self.index["snaps"].append({"step": run.step, "epoch": round(run.step / self.steps_per_epoch, 4),
                                    "kind": kind, "time": time.process_time()})
        fileio.write_json(self.folder / "snaps.json", self.index)


class Tracked:
    """A `fit` callback: the study's tracker (`attention_and_learning.study_tracker`: maps and faithfulness measures
    of the 64-image probe) run in the training process at the snapshots `SnapshotSaver` keeps — step 0, every
    `every` steps, every epoch end — with its CPU seconds counted apart from the training's."""

    def __init__(self, folder: Path, job: str, seed: int, cfg: TrainConfig, every: int) -> None:
        import attention_and_learning as study

        self.tracker, self.causal = study.study_tracker(folder, job, seed, cfg.model, cfg.data, cfg.data_cfg)
        self.every, self.steps, self.times = every, [], []  # times: (CPU clock before, CPU spent) per snapshot

    def on_fit_start(self, run: Any) -> None:
        self.steps_per_epoch = -(-len(run.train_data) // run.config.batch_size)
        self._track(run)

    def on_step_end(self, run: Any) -> None:
        if run.step % self.every == 0:
            self._track(run)

    def on_epoch_end(self, run: Any) -> None:
        if run.step not in self.steps:
            self._track(run)

    def _track(self, run: Any) -> None:
        started = time.process_time()
        self.tracker.step(run.model, step=run.step, epoch=round(run.step / self.steps_per_epoch, 4))
        self.steps.append(run.step)
        self.times.append((started, time.process_time() - started))

    def cost(self) -> dict[str, Any]:
        """As `attention_and_learning.measure` counts a replay: the training's CPU seconds between the first and
        the last snapshot (the tracker's own taken out), against the tracker's at every snapshot — its maps and
        its faithfulness measures."""
        train = self.times[-1][0] - self.times[0][0] - sum(spent for _, spent in self.times[:-1])
        causal = self.causal.seconds
        maps = sum(spent for _, spent in self.times) - causal
        return {"snapshots": len(self.steps), "train_cpu_s": round(train, 1), "maps_cpu_s": round(maps, 1),
                "causal_cpu_s": round(causal, 1), "causal_share": round(causal / train, 4),
                "tracker_share": round((causal + maps) / train, 4)}


def config_of(job: str, seed: int, out: Path, encoder: Path | None = None) -> TrainConfig:
    """The `TrainConfig` of one job and seed (the study's extra keys left out)."""
    spec = {k: v for k, v in JOBS[job].items() if k not in STUDY_ONLY}
    if JOBS[job].get("encoder"):
        spec["model_cfg"] = {**spec["model_cfg"], "weights": str(encoder)}
    return TrainConfig(**{"n_test": 1000, "quiet": True, "device": "cpu", **spec}, seed=seed,
                       out=str(run_folder(out, job, seed)))


def run_folder(out: Path, job: str, seed: int) -> Path:
    return out / f"{job.replace('/', '-')}-s{seed}"


def train(job: str, seed: int, out: Path, encoder: Path | None) -> Path:
    """Train one job (or finish it); return its folder."""
    folder = run_folder(out, job, seed)
    if (folder / "done.json").exists():
        return folder
    cfg = config_of(job, seed, out, encoder)
    cfg.resume = (folder / "checkpoints").exists()
    snaps = folder / "snaps"
    snaps.mkdir(parents=True, exist_ok=True)
    started = time.process_time()
    fit(cfg, callbacks=(SnapshotSaver(snaps, snapshot_every(cfg)),))
    fileio.write_json(folder / "done.json", {"job": job, "seed": seed, "cpu_s": round(time.process_time() - started, 1),
                                             "steps_per_epoch": -(-cfg.n // cfg.batch_size)})
    print(f"{job} seed {seed}: {time.process_time() - started:.0f} CPU s", flush=True)
    return folder


def snapshot_every(cfg: TrainConfig) -> int:
    """Steps between snapshots: a third of an epoch."""
    return max(1, -(-cfg.n // cfg.batch_size) // 3)


def train_tracked(job: str, seed: int, out: Path, results: Path) -> None:
    """Train one job with the study's tracker in the training process; its cost to `results/<run>.json` (a run
    already there is skipped; one cut short starts again: nothing of it is kept but its own folder)."""
    folder = run_folder(out, job, seed)
    path = results / f"{folder.name}.json"
    if path.exists():
        return
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # this function's own output of an attempt cut short
    cfg = config_of(job, seed, out, None)
    tracked = Tracked(folder / "study", job, seed, cfg, snapshot_every(cfg))
    fit(cfg, callbacks=(tracked,))
    tracked.tracker.close()
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    record = {"job": job, "seed": seed, "where": "the training process (learning_runs.py --tracked)",
              "final": {"test_acc": metrics[-1]["test_acc"], "train_acc": metrics[-1]["train_acc"]},
              "cost": tracked.cost()}
    fileio.write_json(path, record)
    c = record["cost"]
    print(f"{job} seed {seed} (tracked): faithfulness {c['causal_share']:.1%} of training, tracker "
          f"{c['tracker_share']:.1%}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--tracked", metavar="RESULTS", help="train with the study's tracker in the training process (not "
                   "the replay) and write each run's cost there; use its own --out")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.tracked:
        if any(JOBS[j].get("encoder") or JOBS[j]["model"] == "sat" for j in args.jobs):
            p.error("--tracked: the captioner's measures are learning_sat.py's; choose classification jobs")
        Path(args.tracked).mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for job in args.jobs:
                train_tracked(job, seed, out, Path(args.tracked))
        return
    encoder = None
    if any(JOBS[j].get("encoder") for j in args.jobs):
        import sat_scenes  # the (digit, colour) encoder of the SAT experiments, trained once

        encoder = sat_scenes.pretrain_encoder(out / "encoder-8x8", 8000, 8, (16, 32, 64, 128))
    for seed in args.seeds:
        for job in args.jobs:
            train(job, seed, out, encoder)


if __name__ == "__main__":
    main()
