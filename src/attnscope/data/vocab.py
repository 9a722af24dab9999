"""The batching of captions, and the tokenizer and `Vocabulary` (`attnscope.vocab`, re-exported here).

Shared by the built-in `DigitScenes` and users' caption data sets (Karpathy-split JSON), so
nothing here knows about either. Ids 0–3 are always `<pad>`, `<start>`, `<end>`, `<unk>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from attnscope.errors import InputError
from attnscope.vocab import END, PAD, SPECIALS, START, UNK, Vocabulary, detokenize, tokenize

__all__ = ["END", "PAD", "SPECIALS", "START", "UNK", "CaptionBatch", "Vocabulary", "collate_captions",
           "detokenize", "pad_ids", "tokenize", "word_boxes"]


class CaptionBatch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W)
    captions: torch.Tensor  # (B, T) long: <start> ... <end>, then <pad>
    lengths: torch.Tensor  # (B,) long: tokens of each row before padding, <start> and <end> included
    references: list[list[str]]  # all reference captions of each image (for BLEU and grounding)
    # (B, T - 1, 4) long: the box of the object each target word captions[:, 1:] names, -1 rows for none;
    # None when the samples have no per-word alignments (DigitScenes has them)
    boxes: torch.Tensor | None = None


def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into `(ids (B, T), lengths (B,))` with T the longest length."""
    if not sequences:
        raise InputError("no sequences to pad")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    out = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out, lengths


def collate_captions(samples: Sequence[Any], vocab: Vocabulary, reference: int | None = 0) -> CaptionBatch:
    """Batch samples with `.image` (3, H, W) and `.captions`: images stacked, one caption each, padded.

    `reference` picks which reference caption each image is trained on: an index, or None for one
    drawn with torch's generator (seeded by `torch.manual_seed` / the DataLoader's worker seed).
    Use as `DataLoader(ds, collate_fn=functools.partial(collate_captions, vocab=vocab))`.
    """
    chosen, picks = [], []
    for s in samples:
        k = int(torch.randint(len(s.captions), ())) if reference is None else reference
        if not -len(s.captions) <= k < len(s.captions):
            raise InputError(f"reference {k} out of range for a sample with {len(s.captions)} captions")
        chosen.append(vocab.encode(s.captions[k]))
        picks.append(k)
    ids, lengths = pad_ids(chosen, vocab.pad_id)
    images = torch.stack([s.image for s in samples])  # (B, 3, H, W)
    boxes = None
    if all(getattr(s, "alignments", None) is not None for s in samples):
        boxes = word_boxes([s.alignments[k] for s, k in zip(samples, picks, strict=True)], ids.shape[1] - 1)
    return CaptionBatch(images, ids, lengths, [list(s.captions) for s in samples], boxes)


def word_boxes(alignments: Sequence[Sequence[Any]], steps: int) -> torch.Tensor:
    """(B, steps, 4) long boxes of the words of each caption (tokens with `.box`, a box or None), −1 rows
    where a word names nothing and after the caption's words (its <end> and padding)."""
    out = torch.full((len(alignments), steps, 4), -1, dtype=torch.long)
    for row, tokens in enumerate(alignments):
        if len(tokens) >= steps:
            raise InputError(f"an alignment of {len(tokens)} words does not fit a caption of {steps} steps")
        for t, token in enumerate(tokens):
            if token.box is not None:
                out[row, t] = torch.as_tensor(token.box, dtype=torch.long)
    return out
