"""Scoring the runs of `multimodal_scenes.py`: per-word grounding, causal faithfulness and trust, one JSON per run.

Captioners (SAT, captioner-tiny), on the first reference caption of each test scene, teacher-forced, every word
that names an object (its colour and its number word), through `Caption` targets:
- pointing (the map's arg-max in the named object's box) and energy (share of the positive mass in it);
- causal faithfulness: remove each object exactly (`DigitScenes.without`); drop_j = log p(word | x) −
  log p(word | x without j); ρ_named = Spearman, over all words, of the energy in the named object's box and the
  drop when that object is removed; single deletion = Spearman over the scene's objects of mass_j and drop_j
  (mass_j: positive mass share in object j's box), mean over words;
- a changed word: the same caption with the word's phrase naming an object absent from the scene — Spearman of
  the map of the changed word and of the true word (a map of a word should change with the word);
- model randomisation: the decoder's weights re-drawn, then the encoder's too (cascading), and the encoder alone
  (independent): Spearman of each word's map before and after;
- data randomisation: captioner-tiny trained on shuffled captions, the same words: Spearman of the two maps.
clip-tiny, on the phrase of every object ("a red three") as `Text` targets: pointing, energy, ρ_named from the
similarity drop, single deletion, a phrase naming an absent object, randomisation of either tower (independent).

Each value is kept per (image, word), so tables can pool seeds and pair methods on the same words.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import torch

import attnscope as ats
from attnscope import data, fileio
from attnscope.data.digits import COLOURS, NUMBER_WORDS
from attnscope.data.scenes import phrase_of
from attnscope.explain.multimodal import Caption, captioner
from attnscope.explain.text import Text
from attnscope.metrics.localisation import box_masks
from attnscope.metrics.similarity import spearman
from attnscope.models import checkpoint

METHODS = {"sat": ("alpha", "gradcam", "saliency", "inputxgrad"),
           "captioner": ("alpha", "chefer-mm", "gradcam", "attnlrp", "saliency", "inputxgrad"),
           "clip": ("gradcam", "attention", "rollout", "chefer-mm", "legrad", "attnlrp", "saliency")}
TRUST_N = 30  # scenes for the randomisation and changed-word tests


def _finished(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.jsonl"
    return metrics.exists() and len(metrics.read_text().splitlines()) >= epochs


def score_seed(runs: dict[str, Path], seed: int, args: Any, results: Path) -> None:
    """Score every finished run of one seed into results/<model>-s<seed>.json (skipped when present)."""
    test = data.get("scenes", "test", args.score_n, seed=0, size=64, digit_size=[15, 23])
    for name in ("sat", "captioner", "clip"):
        path = results / f"{name}-s{seed}.json"
        if name == "captioner" and path.exists():
            _add_shuffled(path, runs, test, args.epochs)
        if path.exists() or not _finished(runs[name], args.epochs):
            continue
        model, _ = checkpoint.load(runs[name])
        model.eval()
        if name == "clip":
            out = score_clip(model, test)
        else:
            shuffled = runs.get("captioner-shuffled") if name == "captioner" else None
            other = checkpoint.load(shuffled)[0].eval() if shuffled and _finished(shuffled, args.epochs) else None
            out = score_captioner(model, test, METHODS[name], other)
        out.update(model=name, seed=seed, run=str(runs[name]), n_scenes=len(test))
        fileio.write_json(path, out)
        print(f"scored {path}", flush=True)


def _add_shuffled(path: Path, runs: dict[str, Path], test: Any, epochs: int) -> None:
    """The data randomisation test of a captioner scored before its shuffled-caption twin had finished training."""
    scored = json.loads(path.read_text())
    shuffled = runs.get("captioner-shuffled")
    methods = tuple(scored["methods"])
    if "shuffled captions" in scored["trust"][methods[0]] or shuffled is None or not _finished(shuffled, epochs):
        return
    model, other = (checkpoint.load(p)[0].eval() for p in (runs["captioner"], shuffled))
    for i in range(min(TRUST_N, len(test))):
        sample = test[i]
        maps, theirs = (_maps(m, sample.image, sample.captions[0], methods) for m in (model, other))
        for t, _ in _words(sample):
            for m in methods:
                scored["trust"][m].setdefault("shuffled captions", []).append(float(spearman(maps[m][t],
                                                                                             theirs[m][t])))
    fileio.write_json(path, scored)
    print(f"added the shuffled-caption test to {path}", flush=True)


# --- captioners ------------------------------------------------------------------------------------------------


def _words(sample: Any) -> list[tuple[int, int]]:
    """(position in the caption's targets, object index) of every object word of the first reference."""
    return [(t, tok.object) for t, tok in enumerate(sample.alignments[0]) if tok.object is not None]


def _logp(model: torch.nn.Module, image: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p of each target token (T,) of `ids` (T + 1,) given `image` (C, H, W), teacher-forced."""
    with torch.no_grad():
        logits = captioner(model).forced(image[None], ids[None])[0]
    return logits.log_softmax(-1).gather(1, ids[1:, None])[:, 0]


def _box_share(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass inside its box: maps (N, H, W), boxes (N, 4) → (N,)."""
    pos = maps.clamp_min(0)
    inside = (pos * box_masks(boxes, tuple(maps.shape[-2:]))).flatten(1).sum(1)
    return inside / pos.flatten(1).sum(1).clamp_min(1e-12)


def _pointing(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """1 where the arg-max of the map (N, H, W) is in the box; 0 for a flat map."""
    flat = maps.flatten(1)
    hit = box_masks(boxes, tuple(maps.shape[-2:])).flatten(1).gather(1, flat.argmax(1)[:, None])[:, 0]
    return hit.float() * (flat.amax(1) > flat.amin(1)).float()


def _maps(model: torch.nn.Module, image: torch.Tensor, caption: str, methods: tuple[str, ...]) -> dict[str, Any]:
    out = ats.explain(model, image[None], list(methods), targets=Caption([caption]))
    return {m: out[m].values[0].float() for m in methods}  # (T, H, W) each


def score_captioner(model: torch.nn.Module, test: Any, methods: tuple[str, ...],
                    shuffled: torch.nn.Module | None) -> dict[str, Any]:
    """Per word: pointing, energy, drops; per method and word: the trust tests (module docstring)."""
    rows: list[dict[str, Any]] = []
    found = captioner(model)
    for i in range(len(test)):
        sample = test[i]
        caption, words = sample.captions[0], _words(sample)
        ids = torch.tensor(found.encode(caption))
        maps = _maps(model, sample.image, caption, methods)
        base = _logp(model, sample.image, ids)
        gone = torch.stack([_logp(model, test.without(i, j), ids) for j in range(len(sample.objects))])  # (J, T)
        boxes = torch.tensor([o.box for o in sample.objects])
        for t, o in words:
            row = {"image": i, "t": t, "word": sample.alignments[0][t].word, "object": o,
                   "area": _area(boxes[o]), "drops": (base[t] - gone[:, t]).tolist()}
            for m in methods:
                mp = maps[m][t][None].expand(len(boxes), -1, -1)
                shares = _box_share(mp, boxes)
                row[m] = {"pointing": float(_pointing(mp[:1], boxes[o : o + 1])), "energy": float(shares[o]),
                          "masses": shares.tolist()}
            rows.append(row)
    trust = captioner_trust(model, test, methods, shuffled)
    return {"methods": list(methods), "rows": rows, "trust": trust}


def _area(box: torch.Tensor) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1])) / (64 * 64)


def _changed(sample: Any, t: int, rng: random.Random) -> str:
    """The first reference with the phrase of word t's object naming a (colour, digit) absent from the scene."""
    held = {(o.colour, o.digit) for o in sample.objects}
    colour, digit = rng.choice([(c, d) for c in COLOURS for d in range(10) if (c, d) not in held])
    tokens = [tok.word for tok in sample.alignments[0]]
    o = sample.alignments[0][t].object
    for k, tok in enumerate(sample.alignments[0]):
        if tok.object == o:
            tokens[k] = colour if tok.word in COLOURS else NUMBER_WORDS[digit]
    return " ".join(tokens)


def captioner_trust(model: torch.nn.Module, test: Any, methods: tuple[str, ...],
                    shuffled: torch.nn.Module | None) -> dict[str, Any]:
    """Spearman of each object word's map with its map under: a changed word, randomised weights, shuffled data."""
    rng = random.Random(0)
    stages = {"decoder": _randomized(model, ("decoder",)), "decoder+encoder": _randomized(model, ("decoder",
                                                                                                     "encoder")),
              "encoder (independent)": _randomized(model, ("encoder",))}
    out: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for i in range(min(TRUST_N, len(test))):
        sample = test[i]
        caption, words = sample.captions[0], _words(sample)
        maps = _maps(model, sample.image, caption, methods)
        others = {name: _maps(m, sample.image, caption, methods) for name, m in stages.items()}
        if shuffled is not None:
            others["shuffled captions"] = _maps(shuffled, sample.image, caption, methods)
        for t, _ in words:
            changed = _maps(model, sample.image, _changed(sample, t, rng), methods)
            for m in methods:  # Spearman of two maps (H, W): one value
                for name, other in [("changed word", changed), *others.items()]:
                    out[m].setdefault(name, []).append(float(spearman(maps[m][t], other[m][t])))
    return out


def _randomized(model: torch.nn.Module, parts: tuple[str, ...]) -> torch.nn.Module:
    """A copy of `model` whose `parts` (child names) have their weights re-drawn (seed 0), the rest kept."""
    copied = copy.deepcopy(model)
    torch.manual_seed(0)
    for part in parts:
        for m in getattr(copied, part).modules():
            if hasattr(m, "reset_parameters") and m is not copied:
                m.reset_parameters()
    return copied.eval()


# --- clip-tiny -------------------------------------------------------------------------------------------------


def score_clip(model: torch.nn.Module, test: Any) -> dict[str, Any]:
    """Per object phrase: pointing, energy, the similarity drops; trust tests (module docstring)."""
    methods = METHODS["clip"]
    rows = []
    rng = random.Random(0)
    random_tower, random_text = _randomized_tower(model, "visual"), _randomized_tower(model, "text")
    trust: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for i in range(len(test)):
        sample = test[i]
        texts = [phrase_of(o.colour, o.digit) for o in sample.objects]
        held = {(o.colour, o.digit) for o in sample.objects}
        absent = phrase_of(*rng.choice([(c, d) for c in COLOURS for d in range(10) if (c, d) not in held]))
        out = ats.explain(model, sample.image[None], list(methods), targets=Text([*texts, absent]))
        with torch.no_grad():
            base = model(sample.image[None], model.tokenize(texts))[0]  # (K,)
            gone = torch.stack([model(test.without(i, j)[None], model.tokenize(texts))[0]
                                for j in range(len(texts))])  # (J, K)
        boxes = torch.tensor([o.box for o in sample.objects])
        for k in range(len(texts)):
            row = {"image": i, "object": k, "text": texts[k], "area": _area(boxes[k]),
                   "drops": (base[k] - gone[:, k]).tolist()}
            for m in methods:
                mp = out[m].values[0, k].float()[None].expand(len(boxes), -1, -1)
                shares = _box_share(mp, boxes)
                row[m] = {"pointing": float(_pointing(mp[:1], boxes[k : k + 1])), "energy": float(shares[k]),
                          "masses": shares.tolist()}
            rows.append(row)
        if i < TRUST_N:
            rand = ats.explain(random_tower, sample.image[None], list(methods), targets=Text(texts))
            rand_text = ats.explain(random_text, sample.image[None], list(methods), targets=Text(texts))
            for m in methods:  # maps (K, H, W) against maps (K, H, W): one Spearman per phrase
                a = out[m].values[0].float()
                trust[m].setdefault("absent phrase", []).extend(
                    spearman(a[:-1], a[-1:].expand_as(a[:-1])).tolist())
                trust[m].setdefault("image tower", []).extend(spearman(a[:-1], rand[m].values[0].float()).tolist())
                trust[m].setdefault("text tower", []).extend(
                    spearman(a[:-1], rand_text[m].values[0].float()).tolist())
    return {"methods": list(methods), "rows": rows, "trust": trust}


def _randomized_tower(model: torch.nn.Module, tower: str) -> torch.nn.Module:
    """clip-tiny with one tower's weights re-drawn: "visual" (its transformer blocks; the frozen CNN stem kept) or
    "text" (all of it: the prompts' embeddings change, the image tower is the trained one)."""
    copied = copy.deepcopy(model)
    torch.manual_seed(0)
    part = copied.visual.blocks if tower == "visual" else copied.text
    for m in part.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return copied.eval()


if __name__ == "__main__":
    import sys

    print(json.dumps({"usage": "run experiments/multimodal_scenes.py score"}), file=sys.stderr)
