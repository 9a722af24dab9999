"""Show, Attend and Tell against a transformer captioner (and a tiny CLIP) on DigitScenes: who grounds its words.

The seed's link: SAT's LSTM attention α vs the transformer captioner's cross-attention vs post-hoc maps of each,
scored per word against the box of the object it names, for causal faithfulness against exact counterfactuals,
and followed through training (the tracker, from step 0). Every model sees the same encoder: a SmallCNN trained
to classify (digit, colour) on ClutteredDigits and frozen (`sat_scenes.pretrain_encoder`), as SAT's annotations
and as the hybrid-ViT stem of captioner-tiny and clip-tiny (Dosovitskiy et al. 2021, §3.1).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/multimodal_scenes.py train --seeds 0 1 2
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/multimodal_scenes.py score --seeds 0 1 2

`train` trains what is missing (one run at a time; finished runs are skipped, a run cut short resumes);
`score` writes one JSON per (model, seed) into experiments/results/multimodal (`multimodal_eval.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import sat_scenes  # noqa: E402

from attnscope.track.fit import FitTracker  # noqa: E402
from attnscope.train import TrainConfig, fit  # noqa: E402

SCENES = {"size": 64, "digit_size": [15, 23]}  # as sat_scenes.py and sat_grounding.py
TRACK = {"sat": ("alpha", "gradcam"), "captioner": ("alpha", "chefer-mm", "gradcam"), "captioner-shuffled": (),
         "clip": ()}


def configs(args: argparse.Namespace, seed: int, encoder: Path) -> dict[str, TrainConfig]:
    """The runs of one seed: SAT (the paper's soft attention, λ_DS = 1), captioner-tiny, clip-tiny, and
    captioner-tiny on shuffled captions (the data randomisation test)."""
    out = Path(args.out)
    common = dict(n=args.n, n_test=args.n_test, epochs=args.epochs, batch_size=32, seed=seed, quiet=True,
                  data_cfg=SCENES)
    hybrid = {"stem": "smallcnn", "stem_weights": str(encoder), "freeze_stem": True, "dim": 64, "heads": 4}
    return {
        "sat": TrainConfig(model="sat", data="scenes", out=str(out / f"sat-s{seed}"), lr=3e-3, **common,
                           model_cfg={"attention": "soft", "weights": str(encoder), "freeze_encoder": True,
                                      "dropout": 0.1, "embed_dim": 32, "hidden_dim": 128, "attn_dim": 64},
                           task_cfg={"doubly_stochastic": 1.0, "eval_n": args.eval_n}),
        "captioner": TrainConfig(model="captioner-tiny", data="scenes", out=str(out / f"captioner-s{seed}"), lr=1e-3,
                                 weight_decay=0.05, **common, model_cfg={**hybrid, "depth": 2, "decoder_depth": 2},
                                 task_cfg={"eval_n": args.eval_n}),
        "captioner-shuffled": TrainConfig(model="captioner-tiny", data="scenes-shuffled", lr=1e-3, weight_decay=0.05,
                                          out=str(out / f"captioner-shuffled-s{seed}"), **common,
                                          model_cfg={**hybrid, "depth": 2, "decoder_depth": 2},
                                          task_cfg={"eval_n": args.eval_n}),
        "clip": TrainConfig(model="clip-tiny", data="scenes", out=str(out / f"clip-s{seed}"), lr=1e-3,
                            weight_decay=0.05, **{**common, "batch_size": 64},
                            model_cfg={**hybrid, "depth": 2, "text_dim": 64, "text_depth": 2}),
    }


def train(cfg: TrainConfig, track: tuple[str, ...], probe: int) -> dict[str, Any]:
    """Train (or finish) one run, the tracker on its probe of object words from step 0 when `track` names methods."""
    out = Path(cfg.out)
    done = sat_scenes._epochs_done(out)
    if done < cfg.epochs:
        resume = (out / "config.json").exists()
        callbacks = ()
        if track:
            callbacks = (FitTracker.from_store(out / "track") if resume and (out / "track").exists()
                         else FitTracker(list(track), probe=probe),)
        fit(TrainConfig(**{**cfg.to_dict(), "resume": resume}), callbacks=callbacks)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"out": str(out), "train_s": sum(r["train_time_s"] for r in history), "last": history[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("train", "score"))
    p.add_argument("--out", default="runs/mm")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(TRACK), choices=list(TRACK))
    p.add_argument("--n", type=int, default=8000, help="training scenes")
    p.add_argument("--n-test", type=int, default=500, help="test scenes")
    p.add_argument("--eval-n", type=int, default=100, help="test scenes scored after each epoch")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--probe", type=int, default=16, help="test images whose object words the tracker follows")
    p.add_argument("--results", default="experiments/results/multimodal")
    p.add_argument("--score-n", type=int, default=120, help="test scenes scored by `score`")
    args = p.parse_args()
    encoder = sat_scenes.pretrain_encoder(Path(args.out) / "encoder", 8000, 8)
    if args.what == "train":
        for seed in args.seeds:
            for name, cfg in configs(args, seed, encoder).items():
                if name in args.models:
                    print(name, seed, train(cfg, TRACK[name], args.probe), flush=True)
        return
    import multimodal_eval

    for seed in args.seeds:
        runs = configs(args, seed, encoder)
        multimodal_eval.score_seed({k: Path(v.out) for k, v in runs.items()}, seed, args, Path(args.results))


if __name__ == "__main__":
    main()
