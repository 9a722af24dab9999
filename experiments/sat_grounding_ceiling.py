"""How much of `grounding_ref` can any captioner reach on DigitScenes? The ceiling set by the captions.

`grounding_ref` (experiments/sat_grounding.py) scores α_t while the decoder is teacher-forced on each
scene's first reference caption, "a <colour_i> <digit_i> <relation> a <colour_j> <digit_j>", whose pair
(i, j) the generator draws uniformly from every ordered pair of objects (`scenes._choose_captions`).
At the first colour word nothing says which object the reference will name, so the best α can do is
point where the referent is most likely: with the posterior P(o | image, prefix) uniform over the pairs
whose caption starts with the prefix the decoder has read, the best hit rate at word t is
max_p Σ_o P(o | prefix) [p ∈ box_o] (p: the pointing game's arg-max). Its mean over every object word of
the first references is the ceiling of grounding_ref. Which prefix the attention has read:
- the paper's SAT: α_t = f(a, h_{t−1}) and h_{t−1} was computed from the input y_{t−2}, so w_<t−1
  ("a red" → the attention for "three" has not read "red");
- `attend_word` (SATConfig, not in the paper): E y_{t−1} enters the score, so w_<t.
Generated captions (`grounding`) have no such ceiling: the model chooses whom it names first.

Two attentions on the annotation grid, upsampled and scored as `caption_eval` scores a model's α:
- *oracle*: α_t = β_t of the true referent (`guide.captions.box_attention`), the grid's own limit;
- *SA-optimal*: α_t = Σ_o P(o | prefix) β_o, the minimiser of supervised attention's expected loss
  E[−Σ_i β_ti log α_ti | prefix], i.e. what a perfectly fitted λ → ∞ captioner would attend to.

`--runs DIR ...` scores trained captioners (sat_grounding.py's run folders) the same way, per object
word position, so each can be set against its ceiling.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_grounding_ceiling.py --n-test 500
    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sat_grounding_ceiling.py --runs runs/sat_grounding/soft-s0 ...

Writes experiments/results/sat_grounding_ceiling.json (and sat_grounding_positions.json for `--runs`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sat_grounding import CROWDED, SCENES

from attnscope import data, fileio
from attnscope.data.scenes import NUMBER_WORDS, PHRASES, DigitScenes, relation
from attnscope.explain import explain
from attnscope.guide.captions import box_attention
from attnscope.maps import upsample
from attnscope.metrics.localisation import box_masks, pointing_game
from attnscope.models import checkpoint
from attnscope.train.caption_eval import word_grounding

POSITIONS = ("first colour", "first digit", "second colour", "second digit")


def first_references(objects: list) -> list[tuple[list[str], list[int | None]]]:
    """Every caption the generator can draw as a scene's first reference: (words, referent per word)."""
    out = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            if i == j:
                continue
            phrase = PHRASES[relation(a.box, b.box)][0]
            words = ["a", a.colour, NUMBER_WORDS[a.digit], *phrase, "a", b.colour, NUMBER_WORDS[b.digit]]
            out.append((words, [None, i, i] + [None] * len(phrase) + [None, j, j]))
    return out


def scene_ceiling(sample, size: int, grid: tuple[int, int], lag: int) -> dict[str, list[float]]:
    """Per object word of `sample`'s first reference (in caption order), its attention having read the words
    before t − `lag`: the best expected pointing hit ("ceiling"), and the hit of the oracle and of the
    SA-optimal attention."""
    words = [t.word for t in sample.alignments[0]]
    candidates = first_references(sample.objects)
    assert any(c[0] == words for c in candidates), "the generator's first reference is not a relation caption"
    boxes = torch.tensor([o.box for o in sample.objects])
    masks = box_masks(boxes, (size, size)).float()  # (K, H, W)
    beta = box_attention(boxes[None], grid, (size, size))[0][0].view(len(boxes), *grid)  # (K, h, w)
    out: dict[str, list[float]] = {"ceiling": [], "oracle": [], "SA-optimal": []}
    for t, token in enumerate(sample.alignments[0]):
        if token.object is None:
            continue
        read = max(t - lag, 0)
        same = [refs[t] for w, refs in candidates if w[:read] == words[:read] and len(refs) > t]
        named = [o for o in same if o is not None]
        cover = sum(masks[o] for o in named)  # (H, W): how many candidates each pixel hits
        out["ceiling"].append(float(cover.max()) / len(same))
        optimal = sum(beta[o] for o in named) / len(same)
        for key, alpha in (("oracle", beta[token.object]), ("SA-optimal", optimal)):
            hit = pointing_game(upsample(alpha[None].float(), (size, size)), boxes[token.object][None])
            out[key].append(float(hit))
    return out


def ceiling(scenes: DigitScenes, grid: tuple[int, int], lag: int) -> dict[str, float]:
    """grounding_ref's ceiling, oracle and SA-optimal rates over `scenes`, and the ceiling per object word
    position (first colour, first digit, second colour, second digit)."""
    rates: dict[str, list[list[float]]] = {}
    for k in range(len(scenes)):
        for key, values in scene_ceiling(scenes[k], scenes.size, grid, lag).items():
            rates.setdefault(key, []).append(values)
    result: dict[str, float] = {key: sum(map(sum, v)) / sum(map(len, v)) for key, v in rates.items()}
    result["object_words"] = sum(map(len, rates["ceiling"]))
    for p, name in enumerate(POSITIONS):
        at = [v[p] for v in rates["ceiling"]]
        result[f"ceiling, {name}"] = sum(at) / len(at)
    return result


@torch.no_grad()
def run_positions(run: Path, n_test: int) -> dict[str, float]:
    """A trained captioner's grounding_ref (its α teacher-forced on the first references), per object word position."""
    model, _ = checkpoint.load(run)
    cfg = json.loads((run / "config.json").read_text())
    scenes = data.get("scenes", "test", n_test, seed=cfg.get("data_seed", 0), **cfg["data_cfg"])
    hits: dict[str, list[float]] = {name: [] for name in POSITIONS}
    for start in range(0, n_test, 64):
        samples = [scenes[k] for k in range(start, min(start + 64, n_test))]
        images = torch.stack([s.image for s in samples])
        forced = explain(model, images, ("sat",), options={"sat": {"captions": [s.captions[0] for s in samples]}})
        for alphas, sample in zip(forced["sat"].lowres, samples, strict=True):
            boxes = [token.box for token in sample.alignments[0]]  # as add_reference: object words in order
            scored, _ = word_grounding(alphas[: len(boxes)], boxes, (scenes.size, scenes.size))
            for name, hit in zip(POSITIONS, scored.tolist(), strict=True):
                hits[name].append(hit)
    every = [h for v in hits.values() for h in v]
    return {"grounding_ref": sum(every) / len(every), **{name: sum(v) / len(v) for name, v in hits.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-test", type=int, default=500, help="test scenes (sat_grounding.py scores 500)")
    p.add_argument("--out", default="experiments/results/sat_grounding_ceiling.json")
    p.add_argument("--runs", nargs="+", type=Path, help="score these trained runs per position instead")
    p.add_argument("--runs-out", default="experiments/results/sat_grounding_positions.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.runs:
        path = Path(args.runs_out)
        scored = json.loads(path.read_text()) if path.exists() else {}
        for run in args.runs:
            scored[run.name] = run_positions(run, args.n_test)
            print(run.name, {k: round(v, 3) for k, v in scored[run.name].items()})
        fileio.write_text(path, json.dumps(scored, indent=2, sort_keys=True) + "\n")
        return
    result = {}
    for name, cfg in (("2-3 objects", SCENES), ("crowded", CROWDED)):
        scenes = DigitScenes("test", args.n_test, **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        for grid in ((8, 8), (16, 16)):
            for reader, lag in (("paper's SAT", 1), ("attend_word", 0)):
                result[f"{name}, {grid[0]}x{grid[1]} grid, {reader}"] = ceiling(scenes, grid, lag)
    fileio.write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
