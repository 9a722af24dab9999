"""When does Show, Attend and Tell's attention ground its words on DigitScenes? Supervised attention
(Liu et al., AAAI 2017) against the paper's unsupervised soft attention, and what the unsupervised
model lacks: local annotations (a finer encoder) or scenes whose mean annotation cannot name every object.

Every run is `attnscope.train.fit` on DigitScenes with a frozen SmallCNN encoder pretrained on
(digit, colour) classification, as in `sat_scenes.py` (whose helpers this script uses). Each finished
run is scored on the test scenes: BLEU-1..4, grounding and grounding mass (greedy and beam 3), the
hallucinated phrases, phrase precision and relation accuracy (`sat_caption_errors.py`), and the per-word
NLL with the real and with uniform α. One JSON per (variant, seed) in `--results`, written when the run is
scored and skipped when present, so the script resumes; the table is written from whatever is there.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_grounding.py --out runs/sat_grounding \\
        --variants "soft" "soft, SA 1" --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import sat_caption_errors
import sat_scenes
import torch

from attnscope import fileio
from attnscope.train import TrainConfig

# The data: DigitScenes at 64 px (digits 15–23 px), as sat_scenes.py; CROWDED: 4–6 smaller digits and
# 8 unnamed fragments, so that the mean annotation cannot name (or bind) every object.
SCENES = {"size": 64, "digit_size": [15, 23]}
CROWDED = {"size": 64, "digit_size": [12, 16], "n_objects": [4, 6], "gap": 2, "distractors": 8, "fragment_size": 6}
# Encoders: SmallCNN blocks; "8x8" is sat_scenes.py's (3 max-pools, theoretical receptive field 36 px),
# "16x16" drops one max-pool (2 pools, 18 px) and keeps the width of the annotations (D = 128).
ENCODERS = {"8x8": (16, 32, 64, 128), "16x16": (16, 32, 128)}

# name → options: guide (λ of supervised attention, None: none), ds (λ of the doubly stochastic term),
# model (SATConfig fields), data (DigitScenes options), encoder (ENCODERS key)
VARIANTS: dict[str, dict[str, Any]] = {
    "soft": {},  # the paper's soft attention: λ_DS = 1, h0 from the mean annotation
    "soft, SA 0.1": {"guide": 0.1},
    "soft, SA 1": {"guide": 1.0},
    "soft, SA 10": {"guide": 10.0},
    "soft, SA 100": {"guide": 100.0},
    # not in the paper: α_t also reads the word just read, E y_{t−1} (SATConfig.attend_word)
    "soft, word attention": {"model": {"attend_word": True}},
    "soft, word attention, SA 10": {"guide": 10.0, "model": {"attend_word": True}},
    "soft, positions": {"model": {"position_channels": True}},
    "soft, positions, SA 1": {"guide": 1.0, "model": {"position_channels": True}},
    "soft, zero init, SA 1": {"guide": 1.0, "model": {"init_state": "zero"}},
    "soft, positions, zero init, SA 1": {"guide": 1.0, "model": {"position_channels": True, "init_state": "zero"}},
    # why unsupervised attention does not ground (issue item 2)
    "soft, crowded": {"data": CROWDED},
    "soft, 16x16 encoder": {"encoder": "16x16"},
    "soft, 16x16 encoder, crowded": {"encoder": "16x16", "data": CROWDED},
    "soft, crowded, SA 1": {"guide": 1.0, "data": CROWDED},
}
COLUMNS = ("bleu1", "bleu4", "grounding", "grounding_mass", "grounding_ref", "hallucinated", "phrase_precision",
           "relation_accuracy", "nll", "uniform_gap")


def config(args: argparse.Namespace, name: str, seed: int, encoder: Path) -> TrainConfig:
    """The training run of variant `name` with `seed` (initialisation and data order; the scenes are fixed)."""
    v = VARIANTS[name]
    scenes = v.get("data", SCENES)
    crowded = scenes is CROWDED
    return TrainConfig(
        model="sat", data="scenes", out=str(Path(args.out) / f"{_slug(name)}-s{seed}"), n=args.n, n_test=args.n_test,
        epochs=args.epochs, batch_size=32, lr=args.lr, seed=seed, quiet=True, data_cfg=scenes,
        model_cfg={"attention": "soft", "weights": str(encoder), "freeze_encoder": True, "dropout": 0.1,
                   "embed_dim": 32, "hidden_dim": 128, "attn_dim": 64, "encoder_widths": list(ENCODERS[v.get(
                       "encoder", "8x8")]), "max_len": 30 if crowded else 20, **v.get("model", {})},
        task_cfg={"doubly_stochastic": v.get("ds", 1.0), "eval_n": args.eval_n},
        guide="sat" if v.get("guide") else None, guide_weight=v.get("guide"),
    )


def score(args: argparse.Namespace, name: str, seed: int, encoders: dict[str, Path]) -> dict[str, Any]:
    """Train (or finish) one run and score it; what one results JSON holds."""
    cfg = config(args, name, seed, encoders[VARIANTS[name].get("encoder", "8x8")])
    scored = sat_scenes.train_and_score(cfg, beam=3)
    errors = sat_caption_errors.errors(Path(cfg.out), args.n_test)
    greedy = {**scored["greedy"], **errors}
    greedy["uniform_gap"] = greedy["nll_uniform_alpha"] - greedy["nll"]
    return {"variant": name, "seed": seed, "config": scored["config"], "train_s": scored["train_s"],
            "history": scored["history"], "greedy": greedy, "beam3": scored["beam3"]}


def table(results: list[dict[str, Any]], decoding: str) -> str:
    """Markdown: mean ± std over seeds of each column, one row per variant."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    lines = [f"| variant ({decoding}) | seeds | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 2) + "|"]
    for name in (n for n in VARIANTS if n in by):
        cells = []
        for c in COLUMNS:
            values = [r[decoding][c] for r in by[name] if c in r[decoding]]
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        lines.append(f"| {name} | {len(by[name])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/sat_grounding")
    p.add_argument("--results", default="experiments/results/sat_grounding")
    p.add_argument("--variants", nargs="+", default=["soft", "soft, SA 1"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--n", type=int, default=8000, help="training scenes")
    p.add_argument("--n-test", type=int, default=500, help="test scenes scored at the end")
    p.add_argument("--eval-n", type=int, default=100, help="test scenes scored after each epoch")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--encoder-n", type=int, default=8000)
    p.add_argument("--encoder-epochs", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    results_dir = Path(args.results)
    needed = {VARIANTS[v].get("encoder", "8x8") for v in args.variants}
    encoders = {k: sat_scenes.pretrain_encoder(Path(args.out) / f"encoder-{k}", args.encoder_n, args.encoder_epochs,
                                               ENCODERS[k]) for k in sorted(needed)}
    for seed in args.seeds:
        for name in args.variants:
            path = results_dir / f"{_slug(name)}-s{seed}.json"
            if path.exists():
                continue
            record = {"command": vars(args), **score(args, name, seed, encoders)}
            fileio.write_json(path, record)
            print(name, seed, {k: round(record["greedy"][k], 3) for k in COLUMNS if k in record["greedy"]}, flush=True)
    results = [json.loads(f.read_text()) for f in sorted(results_dir.glob("*.json"))]
    text = table(results, "greedy") + "\n" + table(results, "beam3")
    fileio.write_text(results_dir / "table.md", text)
    print(text)


def _slug(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "_")


if __name__ == "__main__":
    main()
