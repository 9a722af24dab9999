"""ClutteredDigits: one digit among fragments of other digits, with its box and mask as ground truth.

Like cluttered MNIST (Mnih et al. 2014, "Recurrent Models of Visual Attention"), built from
scikit-learn's digits. With `decoy=True`, a small corner patch whose colour encodes the label in
the training split and is random in the test split (like Decoy MNIST, Ross et al. 2017): a shortcut
with a known box. Every sample is generated on demand from (seed, split, index).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from attnscope.console import brief_fields
from attnscope.data.digits import (
    COLOURS,
    INK_THRESHOLD,
    ink_box,
    paint,
    render_digit,
    sample_rng,
    source_digits,
)
from attnscope.errors import InputError

# One colour per label for the decoy patch (train split): evenly spaced hues, fully saturated.
DECOY_COLOURS = torch.tensor(
    [[float(c) for c in _rgb] for _rgb in (
        (1.0, 0.0, 0.0), (1.0, 0.6, 0.0), (0.8, 1.0, 0.0), (0.2, 1.0, 0.0), (0.0, 1.0, 0.6),
        (0.0, 0.8, 1.0), (0.0, 0.2, 1.0), (0.6, 0.0, 1.0), (1.0, 0.0, 0.8), (1.0, 1.0, 1.0),
    )]
)  # (10, 3)


class ClutterSample(NamedTuple):
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    label: int
    box: torch.Tensor  # (4,) long: x0, y0, x1, y1 (x1, y1 exclusive) around the digit's ink
    mask: torch.Tensor  # (H, W) bool: the digit's ink
    decoy_box: torch.Tensor | None = None  # (4,) long: the decoy patch's box; -1s when there is none


    def __repr__(self) -> str:
        return brief_fields(self)


class ClutteredDigits(Dataset):
    """`n` images of `size`×`size` px; sample i is `(image, label, box, mask, decoy_box)`.

    The digit is scaled to `digit_size` px (a random integer in the range), placed at random,
    and drawn in a random colour (`grey=True`: one channel, the mean of the three); `n_fragments`
    random crops of other digits of the same split
    (`fragment_size` px) are scattered outside its box. Images carry mild noise.
    """

    kind = "classification"

    def __init__(
        self,
        split: str = "train",
        n: int = 10_000,
        size: int = 64,
        seed: int = 0,
        decoy: bool = False,
        digit_size: tuple[int, int] = (16, 28),
        n_fragments: int = 6,
        fragment_size: int = 8,
        decoy_size: int = 5,
        noise: float = 0.05,
        grey: bool = False,
    ) -> None:
        if n < 1 or size < 16:
            raise InputError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
        lo, hi = digit_size
        if not (4 <= lo <= hi <= size - 2 * decoy_size * decoy):
            raise InputError(f"digit_size {digit_size} does not fit a {size}px canvas")
        self.split, self.n, self.size, self.seed, self.decoy = split, n, size, seed, decoy
        self.digit_size, self.n_fragments, self.fragment_size = (lo, hi), n_fragments, fragment_size
        self.decoy_size, self.noise, self.grey = decoy_size, noise, bool(grey)
        self.glyphs, self.labels = source_digits(split)  # raises on a bad split
        self.num_classes = 10
        self.class_names = tuple(str(d) for d in range(10))  # what the labels mean: the digit drawn

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> ClutterSample:
        return ClutterSample(*self._generate(index))

    PARTS = ("digit", "fragments", "decoy")

    def without(self, index: int, *parts: str) -> torch.Tensor:
        """Sample `index`'s image (3, H, W) with `parts` (of `PARTS`) never drawn: background (and the
        same noise) where they were — the exact counterfactual, not an inpainting."""
        for part in parts:
            if part not in self.PARTS:
                raise InputError(f"unknown part {part!r}; a ClutteredDigits image has {', '.join(self.PARTS)}")
        return self._generate(index, frozenset(parts))[0]

    def decoy_box(self, index: int) -> torch.Tensor:
        """Box `(x0, y0, x1, y1)` of the decoy patch of sample `index` (requires `decoy=True`)."""
        if not self.decoy:
            raise InputError("this ClutteredDigits has no decoy patch (decoy=False)")
        return self._generate(index)[4]

    def source_index(self, index: int) -> int:
        """Index into `load_digits()` of the digit drawn in sample `index`."""
        from attnscope.data.digits import split_indices

        return int(split_indices()[self.split][self._pick(index)])

    def _pick(self, index: int) -> int:
        return int(sample_rng(self.seed, self.split, index).integers(len(self.glyphs)))

    def _generate(self, index: int, skip: frozenset[str] = frozenset()):
        """(image, label, box, mask, decoy box) of sample `index`, with the parts in `skip` not painted
        (every random draw still made)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        rng = sample_rng(self.seed, self.split, index)
        src = int(rng.integers(len(self.glyphs)))  # must stay the first draw (see _pick)
        label = int(self.labels[src])
        s, canvas = self.size, torch.zeros(3, self.size, self.size)
        margin = self.decoy_size + 1 if self.decoy else 0  # keep the digit off the decoy corners

        # The digit.
        d = int(rng.integers(self.digit_size[0], self.digit_size[1] + 1))
        ink = render_digit(self.glyphs[src], d)  # (d, d)
        x, y = (int(v) for v in rng.integers(margin, s - d - margin + 1, size=2))
        colour = self._colour(rng)
        mask = torch.zeros(s, s, dtype=torch.bool)
        mask[y : y + d, x : x + d] = ink > INK_THRESHOLD
        box = torch.tensor(ink_box(mask))

        # Fragments of other digits, outside the digit's box.
        f = self.fragment_size
        for _ in range(self.n_fragments):
            glyph = self.glyphs[int(rng.integers(len(self.glyphs)))]
            other = render_digit(glyph, int(rng.integers(*self.digit_size)))
            oy, ox = (int(v) for v in rng.integers(0, other.shape[0] - f + 1, size=2))
            piece = other[oy : oy + f, ox : ox + f]  # (f, f)
            for _attempt in range(20):
                px, py = (int(v) for v in rng.integers(0, s - f + 1, size=2))
                if px + f <= box[0] or px >= box[2] or py + f <= box[1] or py >= box[3]:
                    tint = self._colour(rng)
                    if "fragments" not in skip:
                        paint(canvas, piece, px, py, tint)
                    break

        if "digit" not in skip:
            paint(canvas, ink, x, y, colour)

        decoy_box = torch.full((4,), -1)
        if self.decoy:
            k = self.decoy_size
            corner = int(rng.integers(4))
            dx, dy = (0 if corner in (0, 2) else s - k), (0 if corner in (0, 1) else s - k)
            patch = DECOY_COLOURS[label] if self.split == "train" else torch.from_numpy(rng.random(3)).float()
            if "decoy" not in skip:
                canvas[:, dy : dy + k, dx : dx + k] = patch[:, None, None]
            decoy_box = torch.tensor([dx, dy, dx + k, dy + k])

        if self.noise > 0:
            canvas += self.noise * torch.from_numpy(rng.random((3, s, s))).float()
        canvas = canvas.clamp_(0.0, 1.0)
        if self.grey:  # one channel: the mean of the three (models built with in_channels=1)
            canvas = canvas.mean(0, keepdim=True)
        return canvas, label, box, mask, decoy_box

    def _colour(self, rng: np.random.Generator) -> torch.Tensor:
        names = list(COLOURS)
        base = torch.tensor(COLOURS[names[int(rng.integers(len(names)))]])
        return (base * float(rng.uniform(0.75, 1.0))).clamp(0, 1)  # (3,)
