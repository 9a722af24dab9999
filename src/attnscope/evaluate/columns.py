"""The leaderboard's columns: every metric of `attnscope.metrics` as a function of a method's maps
(B, H, W) and the `Batch` it explains, with its group, direction and the ground truth it needs.

A column is one registry entry (`COLUMNS.register(name, Column(...))`), so the leaderboard, the
CLI's `--metrics` filter and the time estimate never grow `if name == ...` chains. Robustness and
focus are columns too, but they read maps of other images (perturbed copies, mosaics), which the
leaderboard explains for all methods at once (`per_method=False`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from attnscope import draws
from attnscope.maps import normalize
from attnscope.metrics import faithfulness as faith
from attnscope.metrics import localisation as loc
from attnscope.metrics import masks as seg
from attnscope.metrics import perturbations as pert
from attnscope.metrics import road
from attnscope.metrics.complexity import complexity, effective_complexity, sparseness
from attnscope.metrics.faithfulness import Scorer
from attnscope.metrics.irof import irof, slic_segments
from attnscope.registry import Registry

GROUPS = ("localisation", "faithfulness", "robustness", "complexity")


@dataclass
class Batch:
    """What the columns may read for the images a leaderboard explains, and the settings they share.

    `scorer` gives class probabilities (RISE, Grad-CAM++, IROF), `correct` the 0/1 accuracy (ROAD),
    both for the explained class of each image. Curves and segments computed for one set of maps are
    kept for the other columns that read them (deletion AUC and pixel-flipping AOPC share a curve).
    """

    images: torch.Tensor  # (B, C, H, W)
    labels: torch.Tensor  # (B,)
    scorer: Scorer
    correct: Scorer
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
        return replace(self, images=self.images[pick], labels=self.labels[pick],
                       scorer=lambda x, source: self.scorer(x, source + i),
                       correct=lambda x, source: self.correct(x, source + i),
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

    def segments(self) -> torch.Tensor:
        """SLIC superpixels of the images, computed once."""
        if "segments" not in self._cache:
            self._cache["segments"] = slic_segments(self.images)
        return self._cache["segments"]


@dataclass(frozen=True)
class Column:
    """A leaderboard column: `fn(maps, batch) -> (B,)`, its group, whether higher is better, the
    ground truth it needs ("boxes", "masks", "mosaics" or ""), and `per_method=False` for the
    columns the leaderboard computes for all methods at once (robustness, focus)."""

    group: str
    fn: Callable[[torch.Tensor, Batch], torch.Tensor] | None
    higher_is_better: bool = True
    needs: str = ""
    per_method: bool = True
    default: bool = True
    seeded: bool = False  # draws at random: computed image by image, each from its own seed (`Batch.one`)

    def values(self, maps: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) for `maps` (B, H, W); a seeded column image by image, so no image's draw depends on its batch."""
        if not self.seeded:
            return self.fn(maps, batch)
        return torch.cat([self.fn(maps[i:i + 1], batch.one(i)).reshape(1) for i in range(maps.shape[0])])


COLUMNS: Registry[Column] = Registry("leaderboard metric")


def _add(name: str, group: str, fn, higher: bool = True, needs: str = "", default: bool = True,
         seeded: bool = False) -> None:
    COLUMNS.register(name, Column(group, fn, higher, needs, default=default, seeded=seeded))


def _deletion(m: torch.Tensor, b: Batch) -> torch.Tensor:
    return b.cached("deletion_zero", m, lambda: faith.deletion_curve(b.scorer, b.images, m, "zero", b.step,
                                                                      b.batch_size))


def _masked(m: torch.Tensor, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return b.cached("masked", m, lambda: faith.masked_scores(b.scorer, b.images, m, b.batch_size))


def _road(order: str) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    def score(m: torch.Tensor, b: Batch) -> torch.Tensor:
        return road.road_auc(road.road_curve(b.correct, b.images, m, order=order, seed=b.seed, batch_size=64))

    return score


# localisation: against the object's box or mask
_add("pointing", "localisation", lambda m, b: loc.pointing_game(m, b.boxes, b.tolerance), needs="boxes")
_add("energy_box", "localisation", lambda m, b: loc.energy_in_box(m, b.boxes), needs="boxes")
_add("energy_box_norm", "localisation", lambda m, b: loc.energy_in_box(normalize(m), b.boxes), needs="boxes",
     default=False)  # on the min–max normalised map: a map on a large floor (rollout) counts it everywhere
_add("mass_mask", "localisation", lambda m, b: loc.relevance_mass(m, b.masks), needs="masks")
_add("rank_mask", "localisation", lambda m, b: loc.relevance_rank(m, b.masks), needs="masks")
_add("top_k_mask", "localisation", lambda m, b: loc.top_k_intersection(m, b.masks, b.top_k), needs="masks")
_add("auc_mask", "localisation", lambda m, b: loc.roc_auc(m, b.masks), needs="masks")
_add("iou_mask", "localisation", lambda m, b: seg.mean_iou(m, b.masks), needs="masks")
_add("pixel_acc_mask", "localisation", lambda m, b: seg.pixel_accuracy(m, b.masks), needs="masks")
_add("ap_mask", "localisation", lambda m, b: seg.average_precision(m, b.masks), needs="masks")
COLUMNS.register("focus", Column("localisation", None, True, "mosaics", per_method=False, default=False))
# faithfulness: ask the model
_add("deletion_zero", "faithfulness", lambda m, b: faith.auc(_deletion(m, b)), higher=False)
_add("pixel_flip_aopc", "faithfulness", lambda m, b: faith.aopc(_deletion(m, b)))
_add("deletion_blur", "faithfulness",
     lambda m, b: faith.deletion_auc(b.scorer, b.images, m, "blur", b.step, b.batch_size), higher=False)
_add("insertion_blur", "faithfulness",
     lambda m, b: faith.insertion_auc(b.scorer, b.images, m, "blur", b.step, b.batch_size))
_add("insertion_zero", "faithfulness",
     lambda m, b: faith.insertion_auc(b.scorer, b.images, m, "zero", b.step, b.batch_size))
_add("avg_drop_pct", "faithfulness", lambda m, b: 100 * faith.drop(*_masked(m, b)), higher=False)
_add("increase_pct", "faithfulness", lambda m, b: 100 * faith.increase(*_masked(m, b)))
_add("faith_corr", "faithfulness", lambda m, b: pert.faithfulness_correlation(
    b.scorer, b.images, m, seed=b.seed, batch_size=b.batch_size), seeded=True)
_add("infidelity", "faithfulness", lambda m, b: pert.infidelity(
    b.scorer, b.images, m, seed=b.seed, batch_size=b.batch_size), higher=False, seeded=True)
_add("region_aopc", "faithfulness", lambda m, b: faith.aopc(faith.region_perturbation(
    b.scorer, b.images, m, batch_size=b.batch_size)), default=False)
_add("monotonicity", "faithfulness", lambda m, b: faith.monotonicity(
    b.scorer, b.images, m, "zero", b.step, b.batch_size), default=False)
_add("road_morf", "faithfulness", _road("morf"), higher=False, default=False, seeded=True)
_add("road_lerf", "faithfulness", _road("lerf"), default=False, seeded=True)
_add("irof", "faithfulness", lambda m, b: irof(b.scorer, b.images, m, b.segments(), "mean", b.batch_size),
     default=False)
# complexity: of the map alone
_add("sparseness", "complexity", lambda m, b: sparseness(m))
_add("complexity", "complexity", lambda m, b: complexity(m), higher=False)
_add("effective_complexity", "complexity", lambda m, b: effective_complexity(m), higher=False)
# robustness: maps of perturbed copies, for all methods at once (attnscope.evaluate.robustness)
for _name in ("max_sensitivity", "avg_sensitivity", "local_lipschitz", "ris", "ros"):
    COLUMNS.register(_name, Column("robustness", None, False, per_method=False, default=False))


def select(spec: str | None) -> list[str]:
    """Column names from a `--metrics` text: "default", "all", group names and column names, comma-separated."""
    from attnscope.errors import InputError

    if spec is None or spec == "default":
        return [n for n in COLUMNS if COLUMNS.get(n).default]
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            picked = COLUMNS.names()
        elif item == "default":
            picked = [n for n in COLUMNS if COLUMNS.get(n).default]
        elif item in GROUPS:
            picked = [n for n in COLUMNS if COLUMNS.get(n).group == item]
        else:
            COLUMNS.get(item)
            picked = [item]
        out += [p for p in picked if p not in out]
    if not out:
        raise InputError("--metrics: give at least one metric or group")
    return out
