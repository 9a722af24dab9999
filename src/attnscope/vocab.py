"""Words ↔ ids for captioning: a tokenizer and a `Vocabulary`.

Below `data` and `models` (like `errors`): the built-in `DigitScenes` and users' caption data sets build one,
and a captioning model (Show, Attend and Tell) carries one in its config, so neither layer imports the other
for it. Ids 0–3 are always `<pad>`, `<start>`, `<end>`, `<unk>`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
