"""What a metric is, said once beside its function: `@declare(name, group, ...)` (Quantus keeps a metric's
name, direction and category beside its computation; so do we).

A declaration (`Metric`) holds the column's name, group, direction, the ground truth it needs, the short
name and legend of the terminal and the report, whether `bench` shows it by default, and `score(maps,
batch) -> (B,)`: how the leaderboard computes it from the `Batch` it explains. `bench`'s leaderboard, the
tracker (`AttentionTracker(..., measures=("pointing", "energy_box"))`), the report's tables and the terminal
tables all read `METRICS`, so a new column everywhere is one function and its declaration:

    @declare("peak_in_box", "localisation", short="peak", legend="peak value inside the box")
    def peak_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        ...

Without `score`, the column calls the function with the map and, by name, the `Batch` fields its required
parameters are called (`boxes`, `masks`, `images`, `labels`); the ground truth it needs follows from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import torch

from attnscope import draws
from attnscope.errors import InputError
from attnscope.registry import Registry

GROUPS = ("localisation", "faithfulness", "complexity", "robustness")
TRUTH = ("boxes", "masks", "mosaics")  # the ground truth a column may need (`needs`)

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
F = TypeVar("F", bound=Callable)


@dataclass
class Batch:
    """What the columns may read for the images a leaderboard (or the tracker) explains, and the settings
    they share.

    `scorer` gives class probabilities (RISE, Grad-CAM++, IROF), `correct` the 0/1 accuracy (ROAD),
    both for the explained class of each image. Curves and segments computed for one set of maps are
    kept for the other columns that read them (deletion AUC and pixel-flipping AOPC share a curve).
    """

    images: torch.Tensor  # (B, C, H, W)
    labels: torch.Tensor  # (B,)
    scorer: Scorer | None = None
    correct: Scorer | None = None
    boxes: torch.Tensor | None = None  # (B, 4)
    masks: torch.Tensor | None = None  # (B, H, W) bool
    tolerance: float = 0.0
    step: int | None = None
    batch_size: int = 256
    seed: int = 0
    top_k: int = 100
    index: torch.Tensor | None = None  # (B,) the images' data-set indices (default 0 … B − 1): seeds their draws
    _cache: dict = field(default_factory=dict, repr=False)

    def one(self, i: int) -> Batch:
        """Image i alone, with the seed of its own draws (`draws.image_seed` of the seed and its data-set index)."""
        index = draws.indices(self.index, self.images.shape[0])
        pick = slice(i, i + 1)
        shift = lambda f: None if f is None else (lambda x, source: f(x, source + i))
        return replace(self, images=self.images[pick], labels=self.labels[pick],
                       scorer=shift(self.scorer), correct=shift(self.correct),
                       boxes=None if self.boxes is None else self.boxes[pick],
                       masks=None if self.masks is None else self.masks[pick],
                       seed=draws.image_seed(self.seed, int(index[i])), index=index[pick], _cache={})

    def cached(self, key: str, maps: torch.Tensor, compute: Callable[[], object]) -> object:
        """`compute()` once per (key, maps) pair: the last maps asked about are remembered."""
        entry = self._cache.get(key)
        if entry is None or entry[0] is not maps:
            entry = (maps, compute())
            self._cache[key] = entry
        return entry[1]

    def once(self, key: str, compute: Callable[[], object]) -> object:
        """`compute()` once for these images (e.g. their SLIC superpixels), whatever the maps."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


_FIELDS = {f.name for f in fields(Batch)} - {"_cache"}


@dataclass(eq=False)
class Metric:
    """A metric's column, declared once: `score(maps (B, H, W), batch) -> (B,)`, its group, whether higher is
    better, the ground truth it needs ("boxes", "masks", "mosaics" or ""), whether it asks the model
    (`model`: a scorer; such a column cannot be recomputed from maps and truth alone), the terminal's
    `short` name and the words of its `legend`, whether `bench` shows it by `default`, its value `bounds`
    (for chart axes), `seeded` (draws at random: computed image by image, each from its own seed) and
    `per_method=False` for the columns the leaderboard computes for all methods at once (robustness, focus)."""

    name: str
    group: str
    score: Callable[[torch.Tensor, Batch], torch.Tensor] | None
    higher_is_better: bool = True
    needs: str = ""
    short: str = ""
    legend: str = ""
    default: bool = True
    per_method: bool = True
    seeded: bool = False
    model: bool = False
    bounds: tuple[float, float] | None = None
    function: Callable | None = field(default=None, repr=False)  # the metric function it was declared on

    @property
    def fn(self) -> Callable[[torch.Tensor, Batch], torch.Tensor] | None:
        """The column function (`score`), under the name the leaderboard has always read."""
        return self.score

    @property
    def header(self) -> str:
        """The short name, marked ↓ where lower is better (terminal and report tables)."""
        return (self.short or self.name) + ("" if self.higher_is_better else "↓")

    def values(self, maps: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) for `maps` (B, H, W); a seeded column image by image, so no image's draw depends on its batch."""
        if self.score is None:
            raise InputError(f"metric {self.name!r} is computed by the leaderboard for all methods at once")
        if not self.seeded:
            return self.score(maps, batch)
        return torch.cat([self.score(maps[i:i + 1], batch.one(i)).reshape(1) for i in range(maps.shape[0])])


METRICS: Registry[Metric] = Registry("metric")
_OPTIONS = {f.name for f in fields(Metric)} - {"name", "group", "score", "function"}


def declare(name: str, group: str, score: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
            **options: Any) -> Callable[[F], F]:
    """Register the column `name` of the decorated metric function (returned unchanged).

    `score(maps, batch)`: how the column is computed; default: the function called with the maps and the
    `Batch` fields named by its other required parameters (`def peak(maps, boxes)` reads `batch.boxes`),
    `needs` then following from them. `options`: the other fields of `Metric` (`higher_is_better`, `needs`,
    `short`, `legend`, `default`, `per_method`, `seeded`, `model`, `bounds`). `per_method=False` columns have
    no `score` (the leaderboard computes them). Columns are registered when `declare(...)` is called, so
    stacked declarations keep the order they are read in. A duplicate name, an unknown group or field raises."""
    if group not in GROUPS:
        raise InputError(f"metric {name!r}: group must be one of {', '.join(GROUPS)}, got {group!r}")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InputError(f"metric {name!r}: no field {', '.join(sorted(unknown))}; fields: "
                         f"{', '.join(sorted(_OPTIONS))}")
    needs = options.get("needs")
    if needs is not None and needs not in ("", *TRUTH):
        raise InputError(f"metric {name!r}: needs must be one of {', '.join(TRUTH)} or '', got {needs!r}")
    metric = Metric(name, group, score, **{"legend": name.replace("_", " "), **options, "needs": needs or ""})
    METRICS.register(name, metric)

    def add(fn: F) -> F:
        metric.function = fn
        if score is None and metric.per_method:
            metric.score, wants = _by_name(name, fn)
            metric.needs = wants if needs is None else needs
        return fn

    return add


def _by_name(name: str, fn: Callable) -> tuple[Callable[[torch.Tensor, Batch], torch.Tensor], str]:
    """The column of `fn(maps, *fields)`: its required parameters after the first read from the Batch by name."""
    params = [p for p in list(inspect.signature(fn).parameters.values())[1:] if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [p.name for p in params if p.name not in _FIELDS]
    if unknown:
        raise InputError(f"metric {name!r}: parameter(s) {', '.join(unknown)} are not Batch fields "
                         f"({', '.join(sorted(_FIELDS))}); pass score=lambda maps, batch: ...")
    reads = [p.name for p in params]
    needs = next((r for r in reads if r in TRUTH), "")
    return (lambda maps, batch: fn(maps, *(getattr(batch, r) for r in reads))), needs


def columns() -> list[str]:
    """Every declared column, group by group in the order of `GROUPS` (declaration order within a group)."""
    _registered()
    return sorted(METRICS.names(), key=lambda n: GROUPS.index(METRICS.get(n).group))


def select(spec: str | None) -> list[str]:
    """Column names from a `--metrics` text: "default", "all", group names and column names, comma-separated."""
    every = columns()
    if spec is None or spec == "default":
        return [n for n in every if METRICS.get(n).default]
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            picked = every
        elif item == "default":
            picked = [n for n in every if METRICS.get(n).default]
        elif item in GROUPS:
            picked = [n for n in every if METRICS.get(n).group == item]
        else:
            METRICS.get(item)
            picked = [item]
        out += [p for p in picked if p not in out]
    if not out:
        raise InputError("--metrics: give at least one metric or group")
    return out


def header(name: str) -> tuple[str, str]:
    """(short header, legend) of a column for a table; a name that is no declared metric stands for itself."""
    _registered()
    if name not in METRICS:
        return name, name
    m = METRICS.get(name)
    return m.header, m.legend


def _registered() -> None:
    """Import every metric family, so that their declarations are in `METRICS`."""
    import attnscope.metrics  # noqa: F401
