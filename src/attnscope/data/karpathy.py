"""Caption data sets in the Karpathy-split JSON layout (`dataset_flickr8k.json`, `dataset_coco.json`).

The JSON holds `{"images": [{"filename", "split", "sentences": [{"tokens": [...], "raw": ...}],
"filepath"?}, ...]}`; images are read from `images/<filepath>/<filename>`. The whole file is
checked when the data set is built: a malformed file, a missing key, a caption without words or
an image file that is not there raises `DataError` naming the file and the entry. The vocabulary
is built from the training split ("train", plus "restval" if asked), so every split of one file
shares it; words outside it encode as <unk>.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from attnscope.console import brief_fields
from attnscope.data.folder import read_image
from attnscope.data.vocab import Vocabulary, tokenize
from attnscope.errors import DataError, InputError
from attnscope.fileio import inside

SPLITS = ("train", "val", "test", "restval")


class CaptionSample(NamedTuple):
    image: torch.Tensor  # (3, size, size) float in [0, 1]
    captions: list[str]  # reference captions (tokens joined by spaces)
    filename: str


    def __repr__(self) -> str:
        return brief_fields(self)


class KarpathyCaptions(Dataset):
    """The images of one split of a Karpathy-split JSON file, each with its reference captions.

    `n` is the largest number of images to use (the file's order is kept); `size` resizes every
    image to size × size; `restval` adds the "restval" images to "train" (as COCO recipes do);
    `min_count` drops words seen fewer times in the training captions from the vocabulary.
    """

    kind = "captioning"

    def __init__(self, json_path: str | Path, images: str | Path, split: str = "train", n: int | None = None,
                 size: int = 224, min_count: int = 5, restval: bool = False) -> None:
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        if n is not None and n < 1 or size < 16 or min_count < 1:
            raise InputError(f"need n >= 1, size >= 16 and min_count >= 1, got {n=}, {size=}, {min_count=}")
        self.json_path, self.root = Path(json_path), Path(images)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        self.size, self.min_count, self.split = size, min_count, split
        entries = read_entries(self.json_path)
        wanted = {"train", "restval"} if split == "train" and restval else {split}
        chosen = [e for e in entries if e.split in wanted][: n if n is not None else None]
        if not chosen:
            found = sorted({e.split for e in entries})
            raise DataError(f"{self.json_path} has no images in split {split!r} (splits found: {found})")
        for e in chosen:
            inside(self.root, e.path, f"{self.json_path}: image {e.path!r}")
        missing = [str(self.root / e.path) for e in chosen if not (self.root / e.path).is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DataError(f"{self.json_path}: image files not found: {', '.join(missing[:3])}{more}")
        self.entries = chosen
        train_splits = {"train", "restval"} if restval else {"train"}
        self._train_captions = [c for e in entries if e.split in train_splits for c in e.captions]

    @cached_property
    def _vocabulary(self) -> Vocabulary:
        if not self._train_captions:
            raise DataError(f"{self.json_path} has no training captions to build a vocabulary from")
        return Vocabulary.from_captions(self._train_captions, min_count=self.min_count)

    def vocabulary(self) -> Vocabulary:
        """Words of the training captions seen at least `min_count` times (the same for every split)."""
        return self._vocabulary

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> CaptionSample:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} images")
        e = self.entries[index]
        return CaptionSample(read_image(self.root / e.path, self.size), list(e.captions), e.path)


class Entry(NamedTuple):
    path: str  # relative to the image folder
    split: str
    captions: tuple[str, ...]


def read_entries(path: Path) -> list[Entry]:
    """Every image entry of a Karpathy-split JSON file, checked; `DataError` names what is wrong."""
    if path.exists() and not path.is_file():
        raise DataError(f"caption file {path} is not a file (json= takes the Karpathy-split JSON file itself)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"caption file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise DataError(f"cannot read caption file {path}: {e.strerror or e}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{path}: expected an object with a list under \"images\" (Karpathy-split layout)")
    return [_entry(path, i, item) for i, item in enumerate(images)]


def _entry(path: Path, i: int, item: Any) -> Entry:
    where = f"{path}: images[{i}]"
    if not isinstance(item, dict):
        raise DataError(f"{where} is not an object")
    for key in ("filename", "split", "sentences"):
        if key not in item:
            raise DataError(f"{where} has no \"{key}\"")
    filename, split, sentences = item["filename"], item["split"], item["sentences"]
    if not isinstance(filename, str) or not filename:
        raise DataError(f"{where}: \"filename\" must be a non-empty string")
    if split not in SPLITS:
        raise DataError(f"{where} ({filename}): \"split\" must be one of {SPLITS}, got {split!r}")
    if not isinstance(sentences, list) or not sentences:
        raise DataError(f"{where} ({filename}): \"sentences\" must be a non-empty list")
    captions = []
    for j, s in enumerate(sentences):
        tokens = s.get("tokens") if isinstance(s, dict) else None
        if tokens is None and isinstance(s, dict) and isinstance(s.get("raw"), str):
            tokens = tokenize(s["raw"])
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(f"{where} ({filename}): sentences[{j}] has no \"tokens\" list of strings (nor \"raw\")")
        words = tokenize(" ".join(tokens))
        if not words:
            raise DataError(f"{where} ({filename}): sentences[{j}] is an empty caption")
        captions.append(" ".join(words))
    filepath = item.get("filepath", "")
    if not isinstance(filepath, str):
        raise DataError(f"{where} ({filename}): \"filepath\" must be a string")
    return Entry(str(Path(filepath) / filename) if filepath else filename, split, tuple(captions))

