"""Training tasks of the image–text models: "contrastive" (`clip-tiny`) and "transformer-captioning"
(`captioner-tiny`). A model names its task (`builder.task`); `fit` asks the model's builder before the data's kind.

- contrastive: CLIP's symmetric InfoNCE (Radford et al., ICML 2021) over a batch of (image, text) pairs, where
  each text is, with probability `phrase_prob`, the noun phrase of one of the image's objects ("a red three",
  `data.scenes.phrases`), else one of its reference captions. A phrase is true of every image of the batch
  that holds such an object, so its positives are all of them (the targets of each row spread evenly over
  its positives) — without that, the loss would push apart matches that are true.
  Evaluation: `phrase_recall` (each test object's phrase ranked within the scene's top-|objects| of all
  colour × digit phrases), and `retrieval` (image → its first caption among the test batch's, top-1).
- transformer-captioning: the captioning task (teacher-forced cross-entropy, BLEU, grounding of α) with the
  doubly stochastic term off by default: it is Show, Attend and Tell's prior for one soft attention over time,
  not a transformer's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from attnscope.data.digits import COLOURS
from attnscope.data.scenes import phrase_of, phrases
from attnscope.data.vocab import Vocabulary
from attnscope.errors import InputError
from attnscope.modules import unwrap
from attnscope.train import captioning
from attnscope.train.config import TrainConfig
from attnscope.train.tasks import TASKS

CONTRASTIVE = {"phrase_prob": 0.5, "eval_n": None}


class PairBatch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W)
    texts: list[str]  # (B,) one text per image
    positives: torch.Tensor  # (B, B) bool: text j is true of image i


@TASKS.register("contrastive")
class Contrastive:
    """Symmetric InfoNCE of a dual encoder on DigitScenes' captions and phrases (module docstring)."""

    def __init__(self, config: TrainConfig) -> None:
        unknown = set(config.task_cfg) - set(CONTRASTIVE)
        if unknown:
            raise InputError(f"contrastive has no task option {sorted(unknown)}; it takes {sorted(CONTRASTIVE)}")
        if config.guide is not None:
            raise InputError("contrastive training takes no --guide")
        self.opts = {**CONTRASTIVE, **config.task_cfg}
        if not 0.0 <= float(self.opts["phrase_prob"]) <= 1.0:
            raise InputError(f"phrase_prob must be in [0, 1], got {self.opts['phrase_prob']}")
        self.vocab: Vocabulary | None = None

    def check(self, dataset: Dataset) -> None:
        if len(dataset) and getattr(dataset[0], "objects", None) is None:
            raise InputError("contrastive training needs scenes with named objects (--data scenes)")

    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        self.vocab = dataset.vocabulary()
        return {"vocab": self.vocab.to_json(), **image_size(dataset)}

    def collate(self, samples: list[Any]) -> PairBatch:
        """One text per image: a phrase of one of its objects (`phrase_prob`) or a caption, drawn with torch's RNG."""
        texts, keys = [], []
        for i, s in enumerate(samples):
            if float(torch.rand(())) < float(self.opts["phrase_prob"]):
                text, k = phrases(s)[int(torch.randint(len(s.objects), ()))]
                keys.append((s.objects[k].colour, s.objects[k].digit))
            else:
                text = s.captions[int(torch.randint(len(s.captions), ()))]
                keys.append(("caption", i))
            texts.append(text)
        held = [{(o.colour, o.digit) for o in s.objects} for s in samples]
        positives = torch.tensor([[key in held[i] if key[0] != "caption" else key[1] == i for key in keys]
                                  for i in range(len(samples))])
        return PairBatch(torch.stack([s.image for s in samples]), texts, positives)

    def loss(self, model: nn.Module, batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        core = unwrap(model)
        logits = model(batch.images.to(device), core.tokenize(batch.texts).to(device))  # (B, B)
        loss = contrastive_loss(logits, batch.positives.to(device))
        hit = batch.positives.to(device).gather(1, logits.argmax(dim=1, keepdim=True)).float()
        return loss, {"count": len(batch.texts), "correct": int(hit.sum())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> dict[str, float]:
        n = len(dataset) if self.opts["eval_n"] is None else min(int(self.opts["eval_n"]), len(dataset))
        samples = [dataset[i] for i in range(n)]
        return {**phrase_recall(model, samples, device), **caption_retrieval(model, samples, device)}


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """½ (CE(image → texts) + CE(text → images)) with each row's target spread evenly over its positives (B, B)."""
    rows = positives.float() / positives.float().sum(dim=1, keepdim=True).clamp_min(1)
    cols = positives.T.float() / positives.T.float().sum(dim=1, keepdim=True).clamp_min(1)
    return 0.5 * (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, cols))


def phrase_recall(model: nn.Module, samples: list[Any], device: torch.device) -> dict[str, float]:
    """Share of the scenes' objects whose phrase is among the scene's top-|objects| of every colour × digit phrase."""
    keys = [(c, d) for c in COLOURS for d in range(10)]
    ids = unwrap(model).tokenize([phrase_of(c, d) for c, d in keys]).to(device)
    hits = total = 0
    for start in range(0, len(samples), 256):
        part = samples[start : start + 256]
        scores = model(torch.stack([s.image for s in part]).to(device), ids)  # (b, 60)
        for row, s in zip(scores, part, strict=True):
            top = {keys[int(j)] for j in row.topk(len(s.objects)).indices}
            hits += sum((o.colour, o.digit) in top for o in s.objects)
            total += len(s.objects)
    return {"phrase_recall": hits / max(total, 1)}


def caption_retrieval(model: nn.Module, samples: list[Any], device: torch.device, group: int = 64) -> dict[str, float]:
    """Top-1 image → caption retrieval among groups of `group` test images' first captions."""
    hits = 0
    core = unwrap(model)
    for start in range(0, len(samples), group):
        part = samples[start : start + group]
        logits = model(torch.stack([s.image for s in part]).to(device), core.tokenize([s.captions[0] for s in part]))
        hits += int((logits.argmax(dim=1).cpu() == torch.arange(len(part))).sum())
    return {"retrieval": hits / max(len(samples), 1)}


@TASKS.register("transformer-captioning")
class TransformerCaptioning(captioning.Captioning):
    """The captioning task with `doubly_stochastic` 0 by default (module docstring); everything else the same."""

    def __init__(self, config: TrainConfig) -> None:
        given = dict(config.task_cfg)
        super().__init__(config)
        self.opts["doubly_stochastic"] = float(given.get("doubly_stochastic", 0.0))

    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        return {**super().model_kwargs(dataset), **image_size(dataset)}


def image_size(dataset: Dataset) -> dict[str, int]:
    """The transformer's `image_size` read off the data's square images (DigitScenes draws 96 px by default, the
    tiny models are built for 64), so `attnscope train --model clip-tiny --data scenes` runs as written; a
    `--model-opt image_size=...` still wins. Nothing for an empty data set or non-square images."""
    if not len(dataset):
        return {}
    height, width = dataset[0].image.shape[-2:]
    return {"image_size": int(height)} if height == width else {}
