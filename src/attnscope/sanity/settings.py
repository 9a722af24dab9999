"""What a randomisation test does besides explaining: how it randomises (`Randomisation`) and how it compares
(`Comparison`). How it explains is one `attnscope.Explainer` (`how`), as for every consumer of maps.

The keywords these grouped (`blocks=`, `metrics=`, ...) and the explain keywords (`methods=`, `layer=`,
`options=`, `batch_size=`) are accepted for one release with a `DeprecationWarning` (`old_keywords`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from attnscope.deprecated import into, moved
from attnscope.errors import InputError
from attnscope.explain import HOW_KEYWORDS, into_how
from attnscope.sanity.blocks import INITS, Granularity, Init

ORDERS = ("top-down", "bottom-up")
CALIBRATION = ("random", "sobel")


@dataclass(frozen=True)
class Randomisation:
    """Which blocks of (a copy of) the model are re-initialised, in what order, how, from which seeds.

    `blocks`: "layer", a name depth or names (`sanity.blocks`); `order`: "top-down" (from the logits, the
    paper's) or "bottom-up" — None: the test's own (top-down; sMPRT bottom-up, as its paper's code);
    `init`: "default" (each module's `reset_parameters`), "trunc-normal" (σ = 0.01) or a function of a
    block's (name, module) parts; the block at execution position i is drawn from
    `torch.manual_seed(block_seed(i, name))`, by default `seed + i`. `reuse`: replay the outputs of the
    modules below the lowest randomised block (`sanity.reuse`: the same maps, fewer passes);
    `channels_last`: the copy runs in NHWC (the same maps up to rounding, often faster on CPUs).
    eMPRT randomises every block at once: it reads `blocks`, `init`, `seed` and `block_seed`.
    """

    blocks: Granularity = "layer"
    order: str | None = None
    init: str | Init = "default"
    seed: int = 0
    block_seed: Callable[[int, str], int] | None = None
    reuse: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.order is not None and self.order not in ORDERS:
            raise InputError(f"order must be one of {ORDERS}, got {self.order!r}")
        if isinstance(self.init, str):
            INITS.get(self.init)

    def seeds(self, blocks: Sequence) -> dict[str, int]:
        """The seed of each traced block (name → seed)."""
        return {b.name: int(self.block_seed(b.position, b.name)) if self.block_seed else self.seed + b.position
                for b in blocks}

    @property
    def init_name(self) -> str:
        return self.init if isinstance(self.init, str) else getattr(self.init, "__name__", repr(self.init))


@dataclass(frozen=True)
class Comparison:
    """How a test compares maps: the similarity `metrics` (None: those defined at the images' size, each left
    out with a note), the `calibration` maps scored beside the methods (a random map, the input's Sobel
    edges), and `keep`: the images whose maps are kept for drawing."""

    metrics: Sequence[str] | None = None
    calibration: Sequence[str] = CALIBRATION
    keep: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 0:
            raise InputError(f"keep must be an int >= 0 (images whose maps are kept), got {self.keep!r}")


RANDOMISATION_KEYWORDS = ("blocks", "order", "init", "seed", "block_seed", "reuse", "channels_last")
COMPARISON_KEYWORDS = ("metrics", "calibration", "keep")


def old_keywords(randomisation: bool = True, comparison: bool = True):
    """Accept a test's keywords of the last release (explain's, and those `Randomisation` and `Comparison` hold)."""

    def wrap(fn):
        if comparison:
            fn = moved("comparison", COMPARISON_KEYWORDS, into(Comparison))(fn)
        if randomisation:
            fn = moved("randomisation", RANDOMISATION_KEYWORDS, into(Randomisation))(fn)
        return moved("how", HOW_KEYWORDS, into_how)(fn)

    return wrap
