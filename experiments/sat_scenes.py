"""Show, Attend and Tell on DigitScenes: soft and hard attention, with and without the doubly stochastic term.

Steps (each skipped when its run folder is already complete, so the script can be re-run):
1. the encoder: as the paper starts from a CNN trained on another task and keeps it fixed (VGG on
   ImageNet), a SmallCNN is trained to classify the 60 (digit, colour) pairs of ClutteredDigits
   (single digits among clutter; the colour read from the digit's ink) and then frozen;
2. captioning runs on DigitScenes with that encoder: by default the paper's soft / hard × λ = 1 / λ = 0;
   `--variants` picks others from VARIANTS (some not in the paper: see docs/sat.md, "Beyond the paper");
3. every final model scored on the test scenes with greedy decoding and with beam search;
   the table goes to `<out>/summary.md` and `<out>/summary.json`.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_scenes.py --out runs/sat_scenes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope import data, fileio
from attnscope.data.digits import COLOURS
from attnscope.models import checkpoint
from attnscope.train import TrainConfig, fit
from attnscope.train.captioning import Captioning

VARIANTS: dict[str, dict[str, Any]] = {
    "soft": {"attention": "soft", "doubly_stochastic": 1.0},
    "soft, no DS": {"attention": "soft", "doubly_stochastic": 0.0},
    "hard": {"attention": "hard", "doubly_stochastic": 1.0},
    "hard, no DS": {"attention": "hard", "doubly_stochastic": 0.0},
    # not among the four asked for: the same encoder fine-tuned (at a lower learning rate) instead of frozen
    "soft, no DS, fine-tuned encoder": {"attention": "soft", "doubly_stochastic": 0.0, "freeze_encoder": False,
                                        "lr": 1e-3},
    # not in the paper (docs/sat.md, "Beyond the paper"): position channels in the annotations, an initial
    # state that is the same for every image (so the image reaches the decoder only by attention), and the
    # annotations scaled down (without it a constant initial state stops learning: the deep output saturates)
    "soft, no DS, positions": {"attention": "soft", "doubly_stochastic": 0.0, "model": {"position_channels": True}},
    "soft, no DS, zero init": {"attention": "soft", "doubly_stochastic": 0.0, "model": {"init_state": "zero"}},
    "soft, no DS, positions, zero init": {"attention": "soft", "doubly_stochastic": 0.0,
                                          "model": {"position_channels": True, "init_state": "zero"}},
    "soft, no DS, zero init, lr 1e-3": {"attention": "soft", "doubly_stochastic": 0.0, "lr": 1e-3,
                                        "model": {"init_state": "zero"}},
    "soft, no DS, scaled 0.1": {"attention": "soft", "doubly_stochastic": 0.0, "model": {"annotation_scale": 0.1}},
    "soft, no DS, scaled 0.1, positions": {"attention": "soft", "doubly_stochastic": 0.0,
                                           "model": {"annotation_scale": 0.1, "position_channels": True}},
    "soft, no DS, scaled 0.1, zero init": {"attention": "soft", "doubly_stochastic": 0.0,
                                           "model": {"annotation_scale": 0.1, "init_state": "zero"}},
    "soft, no DS, scaled 0.1, positions, zero init": {
        "attention": "soft", "doubly_stochastic": 0.0,
        "model": {"annotation_scale": 0.1, "position_channels": True, "init_state": "zero"}},
    "hard, no DS, positions": {"attention": "hard", "doubly_stochastic": 0.0, "model": {"position_channels": True}},
    "soft, no DS, scaled 0.1, zero init, lr 1e-3": {"attention": "soft", "doubly_stochastic": 0.0, "lr": 1e-3,
                                                    "model": {"annotation_scale": 0.1, "init_state": "zero"}},
    "soft, no DS, scaled 0.02, zero init": {"attention": "soft", "doubly_stochastic": 0.0,
                                            "model": {"annotation_scale": 0.02, "init_state": "zero"}},
}
COLUMNS = ("bleu1", "bleu2", "bleu3", "bleu4", "grounding", "grounding_mass", "hallucinated", "grounding_ref",
           "grounding_ref_mass", "nll", "nll_uniform_alpha")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/sat_scenes")
    p.add_argument("--size", type=int, default=64, help="DigitScenes canvas (px); digits scale with it")
    p.add_argument("--n", type=int, default=8000, help="training scenes")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--encoder-n", type=int, default=8000)
    p.add_argument("--encoder-epochs", type=int, default=8)
    p.add_argument("--beam", type=int, default=3, help="beam size of the final scoring (besides greedy)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS)[:4])
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    scale = args.size / 96
    scenes = {"size": args.size, "digit_size": [round(22 * scale), round(34 * scale)]}
    encoder = pretrain_encoder(out / "encoder", args.encoder_n, args.encoder_epochs)
    results = {}
    for name in args.variants:
        v = VARIANTS[name]
        cfg = TrainConfig(
            model="sat", data="scenes", out=str(out / name.replace(", ", "-").replace(" ", "_")), n=args.n,
            n_test=args.n_test, epochs=args.epochs, batch_size=32, lr=v.get("lr", args.lr), quiet=True,
            data_cfg=scenes,
            model_cfg={"attention": v["attention"], "weights": str(encoder),
                       "freeze_encoder": v.get("freeze_encoder", True), "dropout": 0.1, "embed_dim": 32,
                       "hidden_dim": 128, "attn_dim": 64, **v.get("model", {})},
            task_cfg={"doubly_stochastic": v["doubly_stochastic"], "eval_n": 300},
        )
        results[name] = train_and_score(cfg, args.beam)
        print(name, {k: round(x, 4) for k, x in results[name]["greedy"].items()}, flush=True)
    earlier = out / "summary.json"  # results of variants scored by an earlier invocation stay in the table
    kept = json.loads(earlier.read_text())["results"] if earlier.exists() else {}
    summary = {"command": _command(args), "data": scenes, "results": {**kept, **results}}
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", markdown(summary))
    print(markdown(summary))


class ColourDigits(Dataset):
    """ClutteredDigits labelled with (digit, colour): label = digit + 10 · colour index (60 classes)."""

    kind, num_classes = "classification", 10 * len(COLOURS)

    def __init__(self, split: str, n: int, seed: int, **cfg: Any) -> None:
        self.base = data.ClutteredDigits(split, n, seed=seed, **cfg)
        self.table = torch.tensor(list(COLOURS.values()))  # (6, 3)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        s = self.base[index]
        ink = s.image[:, s.mask].mean(dim=1)  # (3,) the digit's colour times its brightness
        scale = (self.table @ ink) / (self.table * self.table).sum(1)  # best brightness per named colour
        colour = int(((scale[:, None] * self.table - ink) ** 2).sum(1).argmin())
        return s.image, s.label + 10 * colour


def pretrain_encoder(out: Path, n: int, epochs: int, widths: tuple[int, ...] | None = None) -> Path:
    """A SmallCNN classifier of (digit, colour) on ClutteredDigits; its `features` become the encoder.
    `widths`: its blocks (default SmallCNN's 16-32-64-128, an 8×8 grid on 64 px)."""
    if "clutter-colour" not in data.names():
        data.register("clutter-colour", ColourDigits)
    weights = out / checkpoint.RUN_WEIGHTS
    if not (weights.exists() and _epochs_done(out) >= epochs):
        fit(TrainConfig(model="smallcnn", data="clutter-colour", out=str(out), n=n, n_test=500, epochs=epochs,
                        batch_size=64, lr=3e-3, quiet=True, resume=(out / "config.json").exists(),
                        model_cfg={} if widths is None else {"widths": list(widths)}))
    acc = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]
    print(f"encoder: SmallCNN on ClutteredDigits (digit, colour), test accuracy {acc:.3f}", flush=True)
    return weights


def train_and_score(cfg: TrainConfig, beam: int) -> dict[str, Any]:
    """Train (or finish training) one captioner; score its final model greedily and with a beam."""
    out = Path(cfg.out)
    started = time.perf_counter()
    if _epochs_done(out) < cfg.epochs:
        fit(TrainConfig(**{**cfg.to_dict(), "resume": (out / "config.json").exists()}))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    model, _ = checkpoint.load(out)
    test = data.get("scenes", "test", cfg.n_test, seed=cfg.data_seed, **cfg.data_cfg)
    scores = {}
    for label, size in (("greedy", 1), (f"beam{beam}", beam)):
        opts = {**cfg.task_cfg, "beam_size": size, "eval_n": None}  # all test scenes (eval_n is per epoch)
        task = Captioning(TrainConfig(**{**cfg.to_dict(), "task_cfg": opts}))
        task.model_kwargs(test)
        metrics = task.evaluate(model, test, torch.device("cpu"), 64)
        scores[label] = dict(metrics)
    scores["greedy"]["nll_uniform_alpha"] = uniform_attention_nll(model, test)
    return {"config": cfg.to_dict(), "train_s": sum(r["train_time_s"] for r in history),
            "wall_s": round(time.perf_counter() - started, 1), "history": history, **scores}


@torch.no_grad()
def uniform_attention_nll(model: torch.nn.Module, test: Dataset) -> float:
    """Per-word NLL on the first references with α replaced by the uniform distribution: how much the
    captioner relies on where it attends (compare with `nll`)."""
    from attnscope.data import collate_captions
    from attnscope.train.captioning import sequence_nll

    attend = model.decoder.attend
    model.decoder.attend = lambda keys, h, emb: torch.full(keys.shape[:2], 1.0 / keys.shape[1])
    try:
        total, words = 0.0, 0.0
        for start in range(0, len(test), 100):
            batch = collate_captions([test[i] for i in range(start, min(len(test), start + 100))], model.vocab)
            out = model(batch.images, batch.captions)
            mask = (batch.captions[:, 1:] != model.vocab.pad_id).float()
            total += float(sequence_nll(out.logits, batch.captions[:, 1:], mask).sum())
            words += float(mask.sum())
    finally:
        model.decoder.attend = attend
    return total / words


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for decoding in ("greedy", *(k for k in next(iter(summary["results"].values())) if k.startswith("beam"))):
        lines += [f"**{decoding}**", "", "| variant | " + " | ".join(COLUMNS) + " | train s |",
                  "| --- " * (len(COLUMNS) + 2) + "|"]
        for name, r in summary["results"].items():
            cells = [f"{r[decoding][c]:.3f}" if c in r[decoding] else "–" for c in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['train_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def _epochs_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _command(args: argparse.Namespace) -> str:
    return "OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_scenes.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(repr(x) for x in v) if isinstance(v, list) else v}"
        for k, v in vars(args).items())


if __name__ == "__main__":
    main()
