"""The training runs of the attention-and-learning study (docs/learning.md): one job at a time, resumable.

Each run is `attnscope.train.fit` with one extra callback that saves the model's weights at step 0, every
third of an epoch and at every epoch end (`<out>/<job>-s<seed>/snaps/<step>.safetensors` and `snaps.json`).
What is measured on those snapshots (maps, faithfulness, sinks) is computed afterwards by
`attention_and_learning.py measure`, exactly as an `AttentionTracker` would have computed it in the loop
(the tracker is a pure function of the weights and the probe), so training never waits for measure code.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/learning_runs.py \\
        --jobs vit-r0/clutter vit-r4/clutter --seeds 0 1 2

A finished run (its `done.json` written) is skipped; an interrupted one resumes from its last epoch.
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
    steps_per_epoch = -(-cfg.n // cfg.batch_size)
    started = time.process_time()
    fit(cfg, callbacks=(SnapshotSaver(snaps, max(1, steps_per_epoch // 3)),))
    fileio.write_json(folder / "done.json", {"job": job, "seed": seed, "cpu_s": round(time.process_time() - started, 1),
                                             "steps_per_epoch": steps_per_epoch})
    print(f"{job} seed {seed}: {time.process_time() - started:.0f} CPU s", flush=True)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    encoder = None
    if any(JOBS[j].get("encoder") for j in args.jobs):
        import sat_scenes  # the (digit, colour) encoder of the SAT experiments, trained once

        encoder = sat_scenes.pretrain_encoder(out / "encoder-8x8", 8000, 8, (16, 32, 64, 128))
    for seed in args.seeds:
        for job in args.jobs:
            train(job, seed, out, encoder)


if __name__ == "__main__":
    main()
