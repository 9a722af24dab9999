"""What a DigitScenes captioner gets wrong: phrases "colour number" that name no object, and relations.

For the greedy captions of the first `--n` test scenes of each run folder given:
- phrase precision: share of "colour number" phrases that name an object of the scene;
- complete: captions whose phrases are exactly the scene's objects;
- relation accuracy: among captions with a relation word and two true phrases, the share whose
  relation ("left", "right", "above", "below") holds between the two named objects (chance ~ 1/4).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_caption_errors.py runs/sat_long/soft-no_DS-positions
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from attnscope import data
from attnscope.data.digits import COLOURS, NUMBER_WORDS
from attnscope.data.scenes import relation
from attnscope.models import checkpoint
from attnscope.train.caption_eval import words_of

RELATIONS = ("left", "right", "above", "below")


def errors(run: Path, n: int) -> dict[str, float]:
    """Phrase precision, complete captions and relation accuracy of `run`'s greedy captions."""
    model, _ = checkpoint.load(run)
    cfg = json.loads((run / "config.json").read_text())
    scenes = data.get("scenes", "test", n, seed=cfg["data_seed"], **cfg["data_cfg"])
    samples = [scenes[i] for i in range(n)]
    captions: list[list[str]] = []
    for start in range(0, n, 100):
        images = torch.stack([s.image for s in samples[start:start + 100]])
        captions += words_of(model.caption(images).tokens, model.vocab)
    c: Counter[str] = Counter()
    for sample, words in zip(samples, captions, strict=True):
        objects = {(o.colour, NUMBER_WORDS[o.digit]): o for o in sample.objects}
        phrases = [(w, x) for w, x in zip(words, words[1:], strict=False) if w in COLOURS and x in NUMBER_WORDS]
        c["phrases"] += len(phrases)
        c["true_phrases"] += sum(p in objects for p in phrases)
        c["complete"] += set(phrases) == set(objects)
        said = [w for w in words if w in RELATIONS]
        if said and len(phrases) == 2 and all(p in objects for p in phrases):
            c["checkable"] += 1
            c["true_relations"] += relation(objects[phrases[0]].box, objects[phrases[1]].box) == said[0]
    return {"phrase_precision": c["true_phrases"] / max(1, c["phrases"]), "complete": c["complete"] / n,
            "relation_accuracy": c["true_relations"] / max(1, c["checkable"]), "relations_checked": c["checkable"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--n", type=int, default=300, help="test scenes")
    args = p.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        print(run, {k: round(v, 3) for k, v in errors(run, args.n).items()}, flush=True)


if __name__ == "__main__":
    main()
