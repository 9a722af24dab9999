"""Words ↔ ids for captioning: a tokenizer, a `Vocabulary` and the batching of captions.

Shared by the built-in `DigitScenes` and users' caption data sets (Karpathy-split JSON), so
nothing here knows about either. Ids 0–3 are always `<pad>`, `<start>`, `<end>`, `<unk>`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from attnscope.errors import DataError, InputError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ATTACHED = frozenset(",.;:!?")  # punctuation written against the word before it


def tokenize(text: str) -> list[str]:
    """Lower-case words and single punctuation marks: "A red 3, left." → [a, red, 3, ",", left, "."]."""
    return _TOKEN.findall(text.lower())


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces, with `, . ; : ! ?` written against the word before them."""
    out: list[str] = []
    for tok in tokens:
        if tok in _ATTACHED and out:
            out[-1] += tok
        else:
            out.append(tok)
    return " ".join(out)


class Vocabulary:
    """A fixed list of words; `encode` a caption to ids framed by `<start>`/`<end>`, `decode` back.

    Words outside the list encode as `<unk>`. Equal vocabularies hold the same words in the same order.
    """

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS)
        for w in words:
            if not isinstance(w, str) or not w:
                raise InputError(f"vocabulary words must be non-empty strings, got {w!r}")
            if w not in SPECIALS and w not in self.itos:
                self.itos.append(w)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_captions(cls, captions: Iterable[str | Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Every token seen at least `min_count` times, most frequent first (ties alphabetical)."""
        if min_count < 1:
            raise InputError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(tokenize(c) if isinstance(c, str) else c)
        kept = sorted((w for w, k in counts.items() if k >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __hash__(self) -> int:
        return hash(tuple(self.itos))

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    @property
    def words(self) -> list[str]:
        """The words after the four specials, in id order."""
        return self.itos[len(SPECIALS) :]

    def index(self, word: str) -> int:
        """The id of `word`, or of `<unk>`."""
        return self.stoi.get(word, self.unk_id)

    def encode(self, caption: str | Sequence[str]) -> list[int]:
        """`[<start>, ids of the caption's tokens..., <end>]`; a string is `tokenize`d first."""
        tokens = tokenize(caption) if isinstance(caption, str) else caption
        return [self.start_id, *(self.index(t) for t in tokens), self.end_id]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The caption up to the first `<end>`; `<pad>`/`<start>` dropped, `<unk>` kept as "<unk>"."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words: list[str] = []
        for i in ids:
            if not 0 <= i < len(self.itos):
                raise InputError(f"id {i} is outside this vocabulary of {len(self.itos)} words")
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                words.append(self.itos[i])
        return detokenize(words)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description that `from_json` turns back into an equal vocabulary."""
        return {"specials": list(SPECIALS), "words": self.words}

    @classmethod
    def from_json(cls, spec: Mapping[str, Any] | str) -> Vocabulary:
        """The vocabulary described by `to_json()` (the dict, or its JSON text)."""
        try:
            spec = json.loads(spec) if isinstance(spec, str) else spec
            specials, words = spec["specials"], spec["words"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"not a vocabulary description ({type(e).__name__}: {e})") from None
        if list(specials) != list(SPECIALS):
            raise DataError(f"vocabulary specials {specials!r} differ from {list(SPECIALS)!r}")
        if not isinstance(words, list) or len(set(words)) != len(words) or set(words) & set(SPECIALS):
            raise DataError("vocabulary words must be a list of distinct non-special strings")
        try:
            return cls(words)
        except InputError as e:
            raise DataError(str(e)) from None


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
