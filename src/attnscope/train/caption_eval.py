"""Scoring generated captions: BLEU-1..4 against every reference, and where each object word looked.

Grounding is measured where the data set knows what each word names (DigitScenes): on the
generated caption, every word of a phrase that names an object of the scene ("red three") is
scored against that object's box; on the reference captions (teacher-forced), every word that
has a box is. A hit is the attention's arg-max inside the box; the mass is the share of α in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from attnscope.data.digits import COLOURS, NUMBER_WORDS
from attnscope.data.vocab import Vocabulary, tokenize
from attnscope.explain import explain
from attnscope.maps import SequenceMap, upsample
from attnscope.metrics.captions import Box, corpus_bleu, grounding, object_word_boxes

OBJECT_WORDS = frozenset(COLOURS) | frozenset(NUMBER_WORDS)


def words_of(tokens: torch.Tensor, vocab: Vocabulary) -> list[list[str]]:
    """Word lists of generated ids (B, T): up to <end>, specials dropped."""
    return [tokenize(vocab.decode(row)) for row in tokens]


def add_generated(scores: CaptionScores, model: torch.nn.Module, images: torch.Tensor, samples: Sequence[Any] | None,
                  beam_size: int = 1, max_len: int | None = None) -> SequenceMap:
    """Caption `images` (explain's `sat`: words and per-word attention) and add them to `scores` when the
    images have reference `samples`; also ground the first reference, teacher-forced, where words have boxes."""
    seq = explain(model, images, ("sat",), options={"sat": {"beam_size": beam_size, "max_len": max_len}})["sat"]
    if samples is not None:
        scores.add(seq.words, seq.lowres.cpu(), samples)
        if hasattr(samples[0], "alignments"):
            forced = explain(model, images, ("sat",), options={"sat": {"captions": [s.captions[0] for s in samples]}})
            scores.add_reference(forced["sat"].lowres.cpu(), samples)
    return seq


def scene_phrases(sample: Any) -> list[tuple[tuple[str, str], Box]] | None:
    """("colour", "number word") and box of every object of a DigitScenes sample; None for other data."""
    objects = getattr(sample, "objects", None)
    if objects is None:
        return None
    return [((o.colour, NUMBER_WORDS[o.digit]), tuple(o.box)) for o in objects]


class CaptionScores:
    """Accumulates hypotheses, references and grounding counts over batches; `result()` the metrics."""

    def __init__(self) -> None:
        self.hyps: list[list[str]] = []
        self.refs: list[list[list[str]]] = []
        self.sums = {"words": 0, "hits": 0.0, "mass": 0.0, "hallucinated": 0, "ref_words": 0, "ref_hits": 0.0,
                     "ref_mass": 0.0}

    def add(self, words: Sequence[list[str]], alphas: torch.Tensor, samples: Sequence[Any]) -> None:
        """Generated `words` per image, their attention (B, T, h, w) at each emitted token, the samples."""
        size = tuple(samples[0].image.shape[-2:])
        for w, a, s in zip(words, alphas, samples, strict=True):
            self.hyps.append(w)
            self.refs.append([tokenize(r) for r in s.captions])
            phrases = scene_phrases(s)
            if phrases is None:
                continue
            boxes = object_word_boxes(w, phrases, set(OBJECT_WORDS))
            self.sums["hallucinated"] += sum(b is False for b in boxes)
            hits, mass = word_grounding(a[: len(w)], boxes, size)
            self.sums["words"] += len(hits)
            self.sums["hits"] += float(hits.sum())
            self.sums["mass"] += float(mass.sum())

    def add_reference(self, alphas: torch.Tensor, samples: Sequence[Any]) -> None:
        """Attention (B, T, h, w) while teacher-forced on each sample's first reference, scored on its boxes."""
        size = tuple(samples[0].image.shape[-2:])
        for a, s in zip(alphas, samples, strict=True):
            alignment = getattr(s, "alignments", None)
            if alignment is None:
                continue
            boxes = [t.box for t in alignment[0]]
            hits, mass = word_grounding(a[: len(boxes)], boxes, size)
            self.sums["ref_words"] += len(hits)
            self.sums["ref_hits"] += float(hits.sum())
            self.sums["ref_mass"] += float(mass.sum())

    def result(self) -> dict[str, float]:
        out = {f"bleu{n}": v for n, v in enumerate(corpus_bleu(self.hyps, self.refs), start=1)}
        s = self.sums
        if s["words"] or s["hallucinated"]:
            named = s["words"] + s["hallucinated"]
            out.update(grounding=s["hits"] / max(s["words"], 1), grounding_mass=s["mass"] / max(s["words"], 1),
                       grounding_strict=s["hits"] / named, hallucinated=s["hallucinated"] / named)
        if s["ref_words"]:
            out.update(grounding_ref=s["ref_hits"] / s["ref_words"], grounding_ref_mass=s["ref_mass"] / s["ref_words"])
        return out


def word_grounding(alphas: torch.Tensor, boxes: Sequence[Box | None | bool], size: tuple[int, int]):
    """Hits and mass (each (N,)) of the words that have a box, from their attention (T, h, w)."""
    keep = [i for i, b in enumerate(boxes) if isinstance(b, tuple)]
    if not keep:
        return torch.zeros(0), torch.zeros(0)
    maps = upsample(alphas[keep].float(), size)  # (N, H, W)
    return grounding(maps, torch.tensor([boxes[i] for i in keep]))
