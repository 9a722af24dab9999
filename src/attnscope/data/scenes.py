"""DigitScenes: 2–3 coloured digits with true captions and, for each word, the box of what it names.

A small captioning world for Show, Attend and Tell (Xu et al. 2015) where grounding can be
measured: "a red three left of a blue seven" comes with the boxes of the red three and the blue
seven for the words `red`, `three`, `blue`, `seven` (function words have none). Relations are
chosen from the dominant axis of the centre difference and only used when the boxes are also
fully separated on that axis, so every caption is true of the geometry. Every sample is generated
on demand from (seed, split, index), from the source digits of its split only.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations, permutations
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from attnscope.console import brief
from attnscope.data.digits import (
    COLOURS,
    INK_THRESHOLD,
    NUMBER_WORDS,
    ink_box,
    paint,
    render_digit,
    sample_rng,
    source_digits,
    split_indices,
)
from attnscope.data.vocab import Vocabulary, detokenize
from attnscope.errors import InputError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

# Where the first object is relative to the second, and the ways of saying it.
PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "left": (("left", "of"), ("to", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",),),
    "below": (("below",),),
}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
DOMINANCE = 1.25  # the centre difference on the relation's axis must be this many times the other
MAX_CAPTIONS = 6  # distinct captions that even the sparsest scene (two digits, one above the other) has
MAX_OBJECTS = 6

Words = list[tuple[str, int | None]]  # a caption as (token, index of the object it names or None)


class SceneObject(NamedTuple):
    digit: int
    colour: str
    box: Box  # around the digit's ink


class Token(NamedTuple):
    word: str
    box: Box | None  # box of the object the word names; None for function words
    object: int | None  # index into `objects`; None for function words


class SceneSample(NamedTuple):
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    captions: list[str]  # reference captions, all true of the image
    tokens: list[Token]  # captions[0] token by token (== alignments[0])
    alignments: list[list[Token]]  # every reference caption token by token
    objects: list[SceneObject]
    masks: torch.Tensor  # (K, H, W) bool: the ink of each object

    def __repr__(self) -> str:
        return (f"SceneSample(image={brief(self.image)}, captions=[{self.captions[0]!r}, … {len(self.captions)} in "
                f"all], tokens={len(self.tokens)}, objects={[(o.colour, o.digit) for o in self.objects]}, "
                f"masks={brief(self.masks)})")


class DigitScenes(Dataset):
    """`n` scenes of `size`×`size` px with `n_objects` coloured digits and `n_captions` captions each.

    Digits are scaled to `digit_size` px, drawn in distinct (colour, digit) pairs so that every
    noun phrase names one object, and placed with at least `gap` px between their boxes.
    `distractors` fragments of other digits (`fragment_size` px crops, in named colours, as
    ClutteredDigits' clutter) are scattered outside every object's box; no caption names them.
    """

    kind = "captioning"

    def __init__(
        self,
        split: str = "train",
        n: int = 10_000,
        size: int = 96,
        seed: int = 0,
        n_objects: tuple[int, int] = (2, 3),
        digit_size: tuple[int, int] = (22, 34),
        gap: int = 4,
        n_captions: int = 5,
        noise: float = 0.05,
        distractors: int = 0,
        fragment_size: int = 6,
    ) -> None:
        lo, hi = n_objects
        dlo, dhi = digit_size
        if n < 1 or size < 16:
            raise InputError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
        if not 2 <= lo <= hi <= MAX_OBJECTS:
            raise InputError(f"n_objects must be a range within 2..{MAX_OBJECTS}, got {n_objects}")
        if not 8 <= dlo <= dhi <= size // 2:
            raise InputError(f"digit_size {digit_size} must lie within 8..{size // 2} for a {size}px canvas")
        if not 1 <= n_captions <= MAX_CAPTIONS:
            raise InputError(f"n_captions must be within 1..{MAX_CAPTIONS}, got {n_captions}")
        if gap < 0 or noise < 0 or distractors < 0:
            raise InputError(f"gap, noise and distractors must be >= 0, got {gap}, {noise}, {distractors}")
        if not 2 <= fragment_size <= dlo:
            raise InputError(f"fragment_size must lie within 2..{dlo} (the smallest digit), got {fragment_size}")
        self.split, self.n, self.size, self.seed = split, n, size, seed
        self.n_objects, self.digit_size, self.gap = (lo, hi), (dlo, dhi), gap
        self.n_captions, self.noise = n_captions, noise
        self.distractors, self.fragment_size = distractors, fragment_size
        self.glyphs, self.labels = source_digits(split)  # raises on a bad split

    @staticmethod
    @lru_cache(maxsize=1)
    def vocabulary() -> Vocabulary:
        """Every word the scene language can produce (the same for any split, n or seed)."""
        function = ["a", "is", "and", ","] + [w for ps in PHRASES.values() for p in ps for w in p]
        return Vocabulary([*function, *COLOURS, *NUMBER_WORDS])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> SceneSample:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        rng = sample_rng(self.seed, self.split, index)
        image, objects, masks, _ = self._draw(rng, sample_rng(self.seed, self.split, index, salt=1))
        captions = _choose_captions(objects, self.n_captions, rng)
        alignments = [
            [Token(w, None if k is None else objects[k].box, k) for w, k in words] for words in captions
        ]
        texts = [detokenize([w for w, _ in words]) for words in captions]
        return SceneSample(image, texts, alignments[0], alignments, objects, masks)

    def without(self, index: int, *objects: int) -> torch.Tensor:
        """Scene `index`'s image (3, H, W) with the objects of those indices (into `objects`) never
        drawn: background (and the same noise) where they were — the exact counterfactual."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return self._draw(sample_rng(self.seed, self.split, index), sample_rng(self.seed, self.split, index, salt=1),
                          frozenset(objects))[0]

    def source_indices(self, index: int) -> list[int]:
        """Indices into `load_digits()` of the digits drawn in sample `index`, in `objects` order."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        picks = self._draw(sample_rng(self.seed, self.split, index), None)[3]
        return [int(split_indices()[self.split][p]) for p in picks]

    def _draw(self, rng: np.random.Generator, clutter: np.random.Generator | None,
              skip: frozenset[int] = frozenset()):
        """The image, objects, masks (K, H, W) and chosen source glyphs of one scene; the distractors come
        from their own generator `clutter` (None: not drawn), so they change nothing else of the scene; the
        objects whose indices are in `skip` are not painted (every random draw is still made)."""
        s = self.size
        k = int(rng.integers(self.n_objects[0], self.n_objects[1] + 1))
        picks, names, inks = self._pick_digits(k, rng)
        boxes = self._layout([tuple(ink.shape) for ink in inks], rng)
        canvas = torch.zeros(3, s, s)
        masks = torch.zeros(k, s, s, dtype=torch.bool)
        objects = []
        for i, (pick, name, ink, (x0, y0, x1, y1)) in enumerate(zip(picks, names, inks, boxes, strict=True)):
            colour = torch.tensor(COLOURS[name]) * float(rng.uniform(0.85, 1.0))  # (3,)
            if i not in skip:
                paint(canvas, ink, x0, y0, colour)
            masks[i, y0:y1, x0:x1] = ink > INK_THRESHOLD
            objects.append(SceneObject(int(self.labels[pick]), name, (x0, y0, x1, y1)))
        for _ in range(self.distractors if clutter is not None else 0):
            self._distract(canvas, boxes, clutter)
        if self.noise > 0:
            canvas += self.noise * torch.from_numpy(rng.random((3, s, s))).float()
        return canvas.clamp_(0.0, 1.0), objects, masks, picks

    def _distract(self, canvas: torch.Tensor, boxes: list[Box], rng: np.random.Generator) -> None:
        """Paint one fragment of a random digit of the split, in a named colour, where it touches no object's box."""
        f, s = self.fragment_size, self.size
        glyph = render_digit(self.glyphs[int(rng.integers(len(self.glyphs)))], int(rng.integers(*self.digit_size)))
        oy, ox = (int(v) for v in rng.integers(0, glyph.shape[0] - f + 1, size=2))
        colour = torch.tensor(COLOURS[list(COLOURS)[int(rng.integers(len(COLOURS)))]])
        for _try in range(20):
            px, py = (int(v) for v in rng.integers(0, s - f + 1, size=2))
            if all(_apart((px, py, px + f, py + f), b, 1) for b in boxes):
                paint(canvas, glyph[oy : oy + f, ox : ox + f], px, py, colour)
                return

    def _pick_digits(self, k: int, rng: np.random.Generator):
        """`k` source glyphs with distinct (colour, digit) pairs, rendered and cropped to their ink."""
        picks: list[int] = []
        names: list[str] = []
        inks: list[torch.Tensor] = []
        colour_names = list(COLOURS)
        while len(picks) < k:
            pick = int(rng.integers(len(self.glyphs)))
            name = colour_names[int(rng.integers(len(colour_names)))]
            if (name, self.labels[pick]) in {(c, self.labels[p]) for c, p in zip(names, picks, strict=True)}:
                continue
            d = int(rng.integers(self.digit_size[0], self.digit_size[1] + 1))
            ink = render_digit(self.glyphs[pick], d)  # (d, d)
            x0, y0, x1, y1 = ink_box(ink > INK_THRESHOLD)
            picks.append(pick)
            names.append(name)
            inks.append(ink[y0:y1, x0:x1].contiguous())  # (h, w): nothing of the digit outside its box
        return picks, names, inks

    def _layout(self, shapes: list[tuple[int, int]], rng: np.random.Generator) -> list[Box]:
        """Boxes for glyphs of `shapes` (h, w): `gap` px apart, every pair in a clear relation."""
        for _layout_try in range(50):
            boxes: list[Box] = []
            for h, w in shapes:
                for _try in range(100):
                    x, y = int(rng.integers(0, self.size - w + 1)), int(rng.integers(0, self.size - h + 1))
                    box = (x, y, x + w, y + h)
                    if all(_apart(box, b, self.gap) and relation(box, b) for b in boxes):
                        boxes.append(box)
                        break
                else:
                    break
            if len(boxes) == len(shapes):
                return boxes
        raise InputError(
            f"could not place {len(shapes)} digits of {self.digit_size} px {self.gap} px apart on a "
            f"{self.size}px canvas; use fewer or smaller digits or a larger canvas"
        )


def relation(a: Box, b: Box) -> str | None:
    """Where box `a` is relative to box `b` ("left", "right", "above", "below"), or None if unclear.

    The relation's axis is the dominant one of the centre difference (by `DOMINANCE`), and the
    boxes must not overlap on that axis: "left" means `a` ends before `b` begins.
    """
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dx) >= DOMINANCE * abs(dy):
        return "left" if a[2] <= b[0] else "right" if b[2] <= a[0] else None
    if abs(dy) >= DOMINANCE * abs(dx):
        return "above" if a[3] <= b[1] else "below" if b[3] <= a[1] else None
    return None


def _apart(a: Box, b: Box, gap: int) -> bool:
    """Whether boxes `a` and `b` are at least `gap` px apart on some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _noun(objects: list[SceneObject], i: int) -> Words:
    return [("a", None), (objects[i].colour, i), (NUMBER_WORDS[objects[i].digit], i)]


def _related(objects: list[SceneObject], i: int, j: int, phrase: tuple[str, ...], copula: bool) -> Words:
    """"a red three [is] left of a blue seven": object i, its relation to j, object j."""
    verb: Words = [("is", None)] if copula else []
    return _noun(objects, i) + verb + [(w, None) for w in phrase] + _noun(objects, j)


def _listed(objects: list[SceneObject], order: tuple[int, ...]) -> Words:
    """"a red three, a blue seven and a green two"."""
    words: Words = []
    for n, i in enumerate(order):
        if n > 0:
            words.append(("and", None) if n == len(order) - 1 else (",", None))
        words += _noun(objects, i)
    return words


def _choose_captions(objects: list[SceneObject], n: int, rng: np.random.Generator) -> list[Words]:
    """`n` distinct true captions: a relation, the same relation said from the other object, the
    list of all objects, then others at random (other pairs, phrasings, orders and sub-lists)."""
    k = len(objects)
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    i, j = pairs[int(rng.integers(len(pairs)))]
    rel_ij = relation(objects[i].box, objects[j].box)
    assert rel_ij is not None  # guaranteed by the layout
    back = PHRASES[INVERSE[rel_ij]]
    chosen = [
        _related(objects, i, j, PHRASES[rel_ij][0], copula=False),
        _related(objects, j, i, back[int(rng.integers(len(back)))], copula=bool(rng.integers(2))),
        _listed(objects, tuple(int(v) for v in rng.permutation(k))),
    ]
    others = [
        _related(objects, a, b, phrase, copula)
        for a, b in pairs
        for phrase in PHRASES[relation(objects[a].box, objects[b].box)]  # type: ignore[index]
        for copula in (False, True)
    ]
    others += [_listed(objects, order) for order in _orders(k)]
    others = [c for c in others if c not in chosen]
    chosen += [others[int(pos)] for pos in rng.permutation(len(others))]
    return chosen[:n]


def _orders(k: int) -> list[tuple[int, ...]]:
    """Every ordering of every subset of at least two of `k` objects."""
    return [p for r in range(2, k + 1) for c in combinations(range(k), r) for p in permutations(c)]


def phrases(sample: SceneSample) -> list[tuple[str, int]]:
    """The noun phrase of every object of a scene ("a red three") with the object's index into `objects`: the
    short texts a dual encoder learns besides the captions (each names exactly one object of the scene)."""
    return [(detokenize([w for w, _ in _noun(sample.objects, i)]), i) for i in range(len(sample.objects))]


def phrase_of(colour: str, digit: int) -> str:
    """The phrase naming an object of `colour` and `digit`: "a red three"."""
    return f"a {colour} {NUMBER_WORDS[digit]}"


class ShuffledCaptions(Dataset):
    """DigitScenes whose training captions belong to other images: sample i keeps its image and takes the captions
    (and word boxes) of sample π(i), π drawn from `caption_seed` — the data of a captioner's data randomisation test
    (Adebayo et al., NeurIPS 2018, §5). A captioner can fit them only by memorising; its maps should not ground."""

    kind = "captioning"

    def __init__(self, base: DigitScenes, caption_seed: int = 0) -> None:
        self.base = base
        self.perm = torch.randperm(len(base), generator=torch.Generator().manual_seed(caption_seed)).tolist()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> SceneSample:
        own, other = self.base[index], self.base[self.perm[index]]
        return own._replace(captions=other.captions, tokens=other.tokens, alignments=other.alignments)

    def vocabulary(self) -> Vocabulary:
        return self.base.vocabulary()


def shuffled(split: str, n: int, seed: int, caption_seed: int = 0, **cfg: object) -> Dataset:
    """Data set "scenes-shuffled": DigitScenes with the training split's captions shuffled across images (the test
    split as it is, so test scores measure what was learnt of the true captions)."""
    scenes = DigitScenes(split, n, seed=seed, **cfg)
    return ShuffledCaptions(scenes, caption_seed) if split == "train" else scenes
