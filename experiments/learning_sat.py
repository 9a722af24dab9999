"""The study's captioner (Show, Attend and Tell on DigitScenes): its attention at every snapshot, against exact
object removal.

On 64 test scenes, teacher-forced on each scene's first reference, for every word that names an object
(a colour or a digit of "a red three left of a blue seven"):

    grounding_ref   α's arg-max lies in the named object's box (as caption_eval's grounding_ref)
    named_drop      log p(word) − log p(word | the scene redrawn without the named object): how much the
                    word needs that object (`DigitScenes.without`, the exact counterfactual)
    parts_top       the object with most α mass is the object whose removal costs the word most
    uniform_gap     per-word NLL with α replaced by the uniform distribution − NLL (Wiegreffe & Pinter, EMNLP 2019)
    nll, word_acc   per-word NLL and arg-max accuracy on the object words: what "learning" means here

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/learning_sat.py

One JSON per SAT run of learning_runs.py in experiments/results/learning/ (skipped when there).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from attnscope import data, fileio
from attnscope.data import collate_captions
from attnscope.models import checkpoint
from attnscope.track.causal import evaluating

RESULTS = Path("experiments/results/learning")
PROBE = 64


def scene_words(samples: list[Any]) -> list[tuple[int, int, int]]:
    """(scene, step, object) for every object word of each scene's first reference."""
    return [(i, t, tok.object) for i, s in enumerate(samples) for t, tok in enumerate(s.tokens)
            if tok.object is not None]


def word_logp(model: torch.nn.Module, images: torch.Tensor, captions: torch.Tensor, uniform: bool = False):
    """log p of every caption token given the previous ones (B, T), α (B, T, L), the grid and the arg-max words."""
    if uniform:
        attend = model.decoder.attend
        model.decoder.attend = lambda keys, h, emb: torch.full(keys.shape[:2], 1.0 / keys.shape[1])
    try:
        out = model(images, captions)
    finally:
        if uniform:
            model.decoder.attend = attend
    logp = out.logits.log_softmax(-1).gather(2, captions[:, 1:, None])[..., 0]  # (B, T)
    return logp, out.alphas, out.grid, out.logits.argmax(-1)


def box_mass(alpha: torch.Tensor, grid: tuple[int, int], box: tuple[int, int, int, int], size: int) -> float:
    """Share of α (L,) on the grid cells' pixels inside the box (each cell's mass spread over its pixels)."""
    h, w = grid
    cells = alpha.reshape(h, w).repeat_interleave(size // h, 0).repeat_interleave(size // w, 1)
    cells = cells / (size // h * size // w)
    x0, y0, x1, y1 = box
    return float(cells[y0:y1, x0:x1].sum())


def scene_inputs(ds: Any, samples: list[Any]) -> list[torch.Tensor]:
    """The probe's scenes, then for each object index k the scenes redrawn without object k (a scene with fewer
    objects as it is): rendered once per run, since every snapshot measures the same scenes."""
    k_max = max(len(s.objects) for s in samples)
    return [torch.stack([s.image for s in samples])] + [
        torch.stack([ds.without(i, k) if k < len(s.objects) else s.image for i, s in enumerate(samples)])
        for k in range(k_max)]


class FeatureCache:
    """The encoder's outputs for the probe's image batches, computed again only when the encoder's weights differ
    from those they were computed with (the study's frozen encoder: once per run)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches, self.weights, self.outputs = batches, None, None

    @contextmanager
    def serving(self, model: torch.nn.Module) -> Iterator[None]:
        """For the block, `model.encoder(batch)` returns the cached output of each of the batches."""
        encoder = model.encoder
        weights = [t.clone() for t in encoder.state_dict().values()]
        if self.weights is None or any(not torch.equal(a, b) for a, b in zip(weights, self.weights, strict=True)):
            self.weights, self.outputs = weights, [encoder(b) for b in self.batches]
        pairs = list(zip(self.batches, self.outputs, strict=True))
        model.encoder = _Lookup(pairs)
        try:
            yield
        finally:
            model.encoder = encoder


class _Lookup(torch.nn.Module):
    """An encoder stand-in that returns the stored output of each batch it was given (matched by identity)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, Any]]) -> None:
        super().__init__()
        self.pairs = pairs

    def forward(self, images: torch.Tensor) -> Any:
        return next(out for batch, out in self.pairs if batch is images)


@torch.no_grad()
def snapshot(model: torch.nn.Module, samples: list[Any], inputs: list[torch.Tensor],
             cache: FeatureCache | None = None) -> dict[str, float]:
    """The measures of one snapshot on `samples` and their `scene_inputs`; `cache`: the encoder's outputs for
    `inputs` (None: the encoder runs on every pass)."""
    batch = collate_captions(samples, model.vocab)
    words = scene_words(samples)
    size = batch.images.shape[-1]
    with cache.serving(model) if cache is not None else nullcontext():
        logp, alphas, grid, guess = word_logp(model, inputs[0], batch.captions)
        uniform_logp = word_logp(model, inputs[0], batch.captions, uniform=True)[0]
        removed = [word_logp(model, imgs, batch.captions)[0] for imgs in inputs[1:]]  # per object index k
    hits, drops, tops = [], [], []
    for i, t, o in words:
        objects = samples[i].objects
        a = alphas[i, t]
        peak = int(a.argmax())
        cy, cx = (peak // grid[1] + 0.5) * size / grid[0], (peak % grid[1] + 0.5) * size / grid[1]
        x0, y0, x1, y1 = objects[o].box
        hits.append(float(x0 <= cx < x1 and y0 <= cy < y1))
        drops.append(float(logp[i, t] - removed[o][i, t]))
        mass = [box_mass(a, grid, ob.box, size) for ob in objects]
        cost = [float(logp[i, t] - removed[k][i, t]) for k in range(len(objects))]
        if max(mass) > min(mass):
            tops.append(float(mass.index(max(mass)) == cost.index(max(cost))))
    mask = torch.zeros_like(logp, dtype=torch.bool)
    for i, s in enumerate(samples):
        mask[i, : len(s.tokens) + 1] = True  # the words and <end>
    w_idx = torch.tensor([(i, t) for i, t, _ in words])
    truth = batch.captions[:, 1:]  # the reference's next word at every step
    i, t = w_idx[:, 0], w_idx[:, 1]
    return {"grounding_ref": _mean(hits), "named_drop": _mean(drops), "parts_top": _mean(tops),
            "uniform_gap": float((logp - uniform_logp)[mask].mean()), "nll": float(-logp[mask].mean()),
            "word_acc": float((guess[i, t] == truth[i, t]).float().mean())}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measure_run(folder: Path) -> dict[str, Any]:
    done = json.loads((folder / "done.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    ds = data.get("scenes", "test", PROBE, seed=0, **config["data_cfg"])
    samples = [ds[i] for i in range(PROBE)]
    model, _ = checkpoint.load(folder)  # the architecture and vocabulary; each snapshot's weights go into it
    snaps = json.loads((folder / "snaps" / "snaps.json").read_text())["snaps"]
    started = time.process_time()
    inputs = scene_inputs(ds, samples)
    cache = FeatureCache(inputs)
    series, spent = [], time.process_time() - started  # the rendering counts once
    for snap in snaps:
        model.load_state_dict(load_file(str(folder / "snaps" / f"{snap['step']:06d}.safetensors")))
        started = time.process_time()
        with evaluating(model):
            series.append({"step": snap["step"], "epoch": snap["epoch"], **snapshot(model, samples, inputs, cache)})
        spent += time.process_time() - started
    train_s = snaps[-1]["time"] - snaps[0]["time"]
    return {"job": done["job"], "seed": done["seed"], "config": config, "series": series,
            "cost": {"snapshots": len(snaps), "train_cpu_s": round(train_s, 1), "measure_cpu_s": round(spent, 1),
                     "tracker_share": round(spent / train_s, 4)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/learning")
    args = p.parse_args()
    torch.set_num_threads(1)
    for folder in sorted(Path(args.out).glob("sat-scenes-s[0-9]*")):
        path = RESULTS / f"{folder.name}.json"
        if path.exists() or not (folder / "done.json").exists():
            continue
        record = measure_run(folder)
        fileio.write_json(path, record)
        print(f"{folder.name}: {len(record['series'])} snapshots, {record['cost']['tracker_share']:.1%}", flush=True)


if __name__ == "__main__":
    main()
