"""Where does a tiny CLIP look for a phrase? Text-conditioned maps of a dual encoder, scored on the named object.

Trains clip-tiny for a few steps on DigitScenes (captions and phrases such as "a red three", contrastive loss),
then for test scenes explains the score of each object's phrase with several methods in one call — maps
(B, K, H, W), one per image and phrase — and checks whether each map points into the named object's box. Last,
the relevance of each prompt token (`explain_tokens`). A few hundred steps do not make a good CLIP: the numbers
show the API, `experiments/multimodal_scenes.py` trains the real ones (docs/multimodal.md).

    PYTHONPATH=src python examples/clip_phrases.py --steps 60
"""

from __future__ import annotations

import argparse

import torch

import attnscope as ats
from attnscope.data import DigitScenes
from attnscope.data.scenes import phrase_of
from attnscope.train.config import TrainConfig
from attnscope.train.multimodal import Contrastive, contrastive_loss

METHODS = ("gradcam", "chefer-mm", "legrad", "attention")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    torch.manual_seed(0)
    scenes = DigitScenes("train", 512, size=48, digit_size=(10, 14))
    model = ats.models.get("clip-tiny", vocab=scenes.vocabulary().to_json(), image_size=48, dim=32, depth=2)
    task = Contrastive(TrainConfig(model="clip-tiny", data="scenes"))
    task.vocab = scenes.vocabulary()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(args.steps):
        batch = task.collate([scenes[(32 * step + i) % len(scenes)] for i in range(32)])
        loss = contrastive_loss(model(batch.images, model.tokenize(batch.texts)), batch.positives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"contrastive loss after {args.steps} steps: {loss.item():.2f}")

    test = DigitScenes("test", 4, size=48, digit_size=(10, 14))
    for i in range(len(test)):
        sample = test[i]
        phrases = [phrase_of(o.colour, o.digit) for o in sample.objects]
        maps = ats.explain(model, sample.image[None], METHODS, targets=ats.Text(phrases))  # (1, K, 48, 48) each
        for k, (phrase, obj) in enumerate(zip(phrases, sample.objects, strict=True)):
            x0, y0, x1, y1 = obj.box
            hits = []
            for name in METHODS:
                peak = int(maps[name].values[0, k].flatten().argmax())
                y, x = divmod(peak, 48)
                hits.append(f"{name} {'in' if x0 <= x < x1 and y0 <= y < y1 else 'out'}")
            print(f"scene {i}, {phrase!r} (score {maps.logits[0, k]:.2f}): peak {', '.join(hits)}")
    tokens = ats.explain_tokens(model, test[0].image[None], ats.Text(phrases), ("inputxgrad", "chefer-mm"))
    for name, tm in tokens.items():
        print(name, [(w, round(v, 3)) for w, v in tm.words(0, 0)])


if __name__ == "__main__":
    main()
