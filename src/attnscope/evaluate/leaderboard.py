"""The leaderboard: every applicable method × every selected metric column (`columns.COLUMNS`), with
time per image, on any classifier and images — with boxes, masks and mosaics where there are some.

`attnscope bench`, `attnscope demo`, `experiments/` and `bench/` all score maps through `leaderboard`.
`estimate` times every method and column on one and on two images first and extrapolates, so a long
run says how long it will take before it starts. Calibration rows (a random map, the input's Sobel edges) bound
each column: what a map that ignores the model scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnscope import console, draws
from attnscope.deprecated import moved
from attnscope.errors import InputError
from attnscope.evaluate import robustness as rob
from attnscope.evaluate.columns import COLUMNS, GROUPS, Batch, select
from attnscope.evaluate.scorers import class_probability, correct_class
from attnscope.explain import HOW_KEYWORDS, Explainer, as_explainer, into_how
from attnscope.explain import progress as explain_progress
from attnscope.metrics import localisation as loc
from attnscope.metrics.similarity import mean_ci
from attnscope.modules import device_of
from attnscope.registry import METHODS
from attnscope.sanity.calibration import CALIBRATIONS

POST_HOC_AND_INTRINSIC = ("cam", "gradient", "perturbation", "intrinsic", "transformer")
MapsFn = Callable[..., Mapping[str, torch.Tensor]]  # (images, classes, index=, draw=) -> {row: maps}
How = Explainer | str | Sequence[str] | Mapping[str, Explainer] | None


@dataclass(frozen=True)
class Mosaics:
    """2×2 mosaics for Focus: images (N, C, 2H, 2W), the explained class (N,), and which quadrants
    (N, 4) show it (`attnscope.data.mosaics` builds them)."""

    images: torch.Tensor
    labels: torch.Tensor
    quadrants: torch.Tensor


@dataclass
class Settings:
    """How the columns are computed (see `columns.Batch`) and how robustness perturbs; the `calibration`
    rows scored beside the methods; whether the maps are kept (`keep_maps`) and a progress bar is shown."""

    tolerance: float = 0.0
    step: int | None = None
    batch_size: int = 256
    seed: int = 0
    top_k: int = 100
    perturbations: int = 10
    noise: str = "uniform"
    radius: float = 0.02
    calibration: Sequence[str] = ("random", "sobel")
    keep_maps: bool = False
    progress: bool = False

    def record(self) -> dict[str, Any]:
        """What defines the numbers (a streamed run's run.json, compared on resume)."""
        return {k: v for k, v in vars(self).items() if k not in ("calibration", "keep_maps", "progress")}


@dataclass
class Board:
    """A leaderboard: `rows` (one per map: method, kind, one value per column, ms_per_image),
    the `maps` of each row when kept, the columns left out for lack of ground truth, and timings."""

    rows: list[dict[str, Any]]
    columns: list[str]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def higher_is_better(self) -> dict[str, bool]:
        return {c: COLUMNS.get(c).higher_is_better for c in self.columns}


def applicable_methods(model: nn.Module, kinds: Sequence[str] = POST_HOC_AND_INTRINSIC) -> list[str]:
    """Registered methods of `kinds` that apply to `model`."""
    return [m for m in METHODS if METHODS.get(m).kind in kinds and METHODS.get(m).applies(model) is None]


def not_applicable(model: nn.Module, kinds: Sequence[str] = POST_HOC_AND_INTRINSIC) -> dict[str, str]:
    """`{method: why}` for the registered methods of `kinds` that do not apply to `model` (e.g. an extra missing)."""
    reasons = {m: METHODS.get(m).applies(model) for m in METHODS if METHODS.get(m).kind in kinds}
    return {m: why for m, why in reasons.items() if why is not None}


def rows_of(how: How, model: nn.Module) -> dict[str, Explainer]:
    """`{row label: Explainer of one method}`: each method of an `Explainer` (or names) under its own name, or the
    labelled `Explainer`s of a mapping as they are (one method each: e.g. one method under several settings);
    None: every method that applies to `model`."""
    how = _every(model) if how is None else how
    if how is None:
        return {}
    if isinstance(how, Mapping):
        out = {str(label): as_explainer(e) for label, e in how.items()}
        for label, e in out.items():
            if len(e.methods) != 1:
                raise InputError(f"the leaderboard row {label!r} must explain one method, got {list(e.methods)}")
        return out
    how = as_explainer(how)
    return {m: how.replace(methods=(m,)) for m in how.methods}


def _every(model: nn.Module) -> Explainer | None:
    """Every method that applies to `model`, in one `Explainer` (None when none does)."""
    names = applicable_methods(model)
    return Explainer(names) if names else None


def _row(label: str, method: str, key: str) -> str:
    """The row name of map `key` of `method` asked under `label` ("ltpa/stages.1" as "mine/stages.1")."""
    return label + key[len(method):] if key.startswith(method) else f"{label} {key}"


def explainers(model: nn.Module, how: How, calibration: Sequence[str], seed: int = 0) -> dict[str, tuple[str, MapsFn]]:
    """`{label: (kind, fn(images, classes) -> {row: maps})}` for each row of `how` (`rows_of`) and calibration
    map. A method's sub-maps (e.g. LTPA's "ltpa/stages.1") are rows named label + the key's suffix."""
    out: dict[str, tuple[str, MapsFn]] = {}
    for label, one in rows_of(how, model).items():
        def run(x: torch.Tensor, c: torch.Tensor, label=label, one=one, **_draws: Any) -> Mapping[str, torch.Tensor]:
            found = rob.Maps(one(model, x, c))
            return {_row(label, one.methods[0], key): v for key, v in found.items()}

        out[label] = (one.specs[0].kind, run)
    for name in calibration:
        CALIBRATIONS.get(name)
        out[name] = ("calibration", lambda x, c, n=name, index=None, draw=0: {n: calibrated(n, x, seed, index, draw)})
    return out


def joint_explainer(model: nn.Module, how: How, calibration: Sequence[str], seed: int = 0) -> MapsFn:
    """One explainer for every row of `how` plus the calibration maps, with rows named as `explainers` names
    them. The methods of one `Explainer` share one call (its passes); labelled rows get a call each."""
    how = _every(model) if how is None else how
    joint = None if how is None or isinstance(how, Mapping) else as_explainer(how)
    each = explainers(model, how, (), seed) if isinstance(how, Mapping) else {}

    def run(x: torch.Tensor, classes: torch.Tensor, index: torch.Tensor | None = None,
            draw: int | torch.Tensor = 0) -> Mapping[str, torch.Tensor]:
        out = rob.Maps(joint(model, x, classes)) if joint is not None else rob.Maps({})
        for _kind, fn in each.values():
            out.update(fn(x, classes))
        for name in calibration:
            out[name] = calibrated(name, x, seed, index, draw)
        return out

    return run


def calibrated(name: str, images: torch.Tensor, seed: int, index: torch.Tensor | None = None,
               draw: int | torch.Tensor = 0) -> torch.Tensor:
    """Calibration map `name` of `images` (float32), its draws seeded per image by `seed` and `index`."""
    return CALIBRATIONS.get(name)(images, draw, seed, index=index).float()


@dataclass
class Plan:
    """The checked inputs of a leaderboard: columns, the Batch they read, explainers, skipped columns."""

    columns: list[str]
    batch: Batch
    explainers: dict[str, tuple[str, MapsFn]]
    joint: MapsFn
    skipped: dict[str, str]


@dataclass
class Scores:
    """Per-image values of a leaderboard: `values[row][column]` (B,) float64 on the CPU (NaN where undefined),
    each row's kind and the explainer it came from (`label`, whose `seconds` it took), skipped columns."""

    columns: list[str]
    values: dict[str, dict[str, torch.Tensor]]
    kinds: dict[str, str]
    labels: dict[str, str]
    skipped: dict[str, str]
    seconds: dict[str, float]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)


def _old_how(how: How, old: dict[str, Any], given: bool) -> Explainer:
    """The `how` of a call with last release's `methods=` / `options=` (`attnscope.deprecated.moved`)."""
    if "methods" not in old and how is None:
        raise TypeError("leaderboard: give the methods with their options: how=Explainer(methods, options=...)")
    return into_how(how, old, given)


@moved("how", HOW_KEYWORDS, _old_how)
def leaderboard(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None, how: How = None, metrics: Sequence[str] | str | None = None,
                settings: Settings | None = None, *, mosaics: Mosaics | None = None,
                index: torch.Tensor | None = None) -> Board:
    """One row per map (for the true classes `targets` (B,)): the mean over the images of each column, and
    `ms_per_image` (the method's explain time). `how`: how to explain — an `Explainer` (its methods share
    their passes where the columns allow), method names, or `{row label: Explainer}` to score one method
    under several settings; None: every method that applies to `model`. `metrics`: column names or a
    `--metrics` text ("default", "all", group names; see `columns.select`). Columns that need ground truth
    that is not given (boxes, masks, mosaics) are left out (`skipped`). `settings`: how the columns are
    computed, the calibration rows, keep the maps, a progress bar. `index`: the images' data-set indices
    (default 0 … B − 1), which seed each image's random draws."""
    scores = image_scores(model, images, targets, boxes, masks, how, metrics, settings, mosaics=mosaics, index=index)
    b = images.shape[0]
    rows = board_rows(scores.columns, scores.kinds, lambda row, col: mean_ci(scores.values[row][col])[0]
                      if col in scores.values[row] else float("nan"),
                      lambda row: 1000 * scores.seconds[scores.labels[row]] / b)
    return Board(rows, scores.columns, scores.maps, scores.skipped, scores.seconds)


def board_rows(columns: Sequence[str], kinds: Mapping[str, str], mean: Callable[[str, str], float],
               ms: Callable[[str], float]) -> list[dict[str, Any]]:
    """The leaderboard's rows: method, kind, the per-method columns, the shared ones (robustness, focus), ms."""
    order = [c for c in columns if COLUMNS.get(c).per_method] + [c for c in columns if not COLUMNS.get(c).per_method]
    return [{"method": row, "kind": kind, **{c: mean(row, c) for c in order}, "ms_per_image": ms(row)}
            for row, kind in kinds.items()]


def image_scores(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, boxes: torch.Tensor | None = None,
                 masks: torch.Tensor | None = None, how: How = None, metrics: Sequence[str] | str | None = None,
                 settings: Settings | None = None, *, mosaics: Mosaics | None = None,
                 index: torch.Tensor | None = None) -> Scores:
    """Every column's value for every image and map (what `leaderboard` averages), with the same arguments."""
    settings = settings or Settings()
    plan = _plan(model, images, targets, (boxes, masks, mosaics), how, metrics, settings, index)
    names, batch, fns = plan.columns, plan.batch, plan.explainers
    per_method = [c for c in names if COLUMNS.get(c).per_method and c not in SHARED_PASSES]
    scores = Scores(names, {}, {}, {}, plan.skipped, {})
    all_maps: dict[str, torch.Tensor] = {}
    with console.progress(len(fns) + 1, "leaderboard", settings.progress) as bar, \
            explain_progress.reporting(explain_progress.to_bar(bar, images_per_method=False)):  # passes as they run
        for name, (kind, fn) in fns.items():
            bar.advance(0, method=name)
            started = time.perf_counter()
            maps = {k: v.detach() for k, v in fn(batch.images, batch.labels, index=batch.index).items()}
            scores.seconds[name] = time.perf_counter() - started
            for key, values in maps.items():
                scores.values[key] = {c: COLUMNS.get(c).values(values, batch).double().cpu() for c in per_method}
                scores.kinds[key], scores.labels[key] = kind, name
                all_maps[key] = values
            bar.advance(1, method=name)
        for key, columns in _passes_shared_by_maps(names, all_maps, batch).items():
            scores.values[key].update(columns)
        shared = _shared_columns(plan, all_maps, settings, mosaics, model, scores.seconds)
        bar.advance(1, method="robustness/focus")
    for key, columns in shared.items():
        scores.values.setdefault(key, {}).update({c: v.double().cpu() for c, v in columns.items()})
    scores.maps = {k: v.cpu() for k, v in all_maps.items()} if settings.keep_maps else {}
    return scores


@dataclass
class Estimate:
    """Seconds a `leaderboard` call is expected to take: per group and in total, from timing every method and
    column on one image (`measured_on`) and scaling to the batch (every cost of a leaderboard is per image)."""

    groups: dict[str, float]
    explain: float
    measured_on: int

    @property
    def total(self) -> float:
        return self.explain + sum(self.groups.values())


def estimate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, boxes: torch.Tensor | None = None,
             masks: torch.Tensor | None = None, how: How = None, metrics: Sequence[str] | str | None = None,
             settings: Settings | None = None, *, mosaics: Mosaics | None = None) -> Estimate:
    """How long `leaderboard` with the same arguments will take: a probe of one image — every explainer and
    every column timed once on the first image (its first calls include one-time costs, so it errs long) —
    scaled to the batch. Columns whose passes every map shares (`SHARED_PASSES`) count once per image."""
    settings = settings or Settings()
    b = images.shape[0]
    one = lambda t: None if t is None else t[:1]  # noqa: E731
    plan = _plan(model, images[:1], targets[:1], (one(boxes), one(masks), None if mosaics is None else Mosaics(
        *(one(t) for t in (mosaics.images, mosaics.labels, mosaics.quadrants)))), how, metrics, settings)
    groups = dict.fromkeys(GROUPS, 0.0)
    maps: dict[str, torch.Tensor] = {}
    explain_s = sum(_timed(lambda fn=fn: maps.update(fn(plan.batch.images, plan.batch.labels)))
                    for _kind, fn in plan.explainers.values())
    first = {next(iter(maps)): next(iter(maps.values()))}  # any map: a column costs the same for each
    for col in (c for c in plan.columns if COLUMNS.get(c).per_method):
        share = 1 if col in SHARED_PASSES else len(maps)
        groups[COLUMNS.get(col).group] += share * _timed(lambda c=col: COLUMNS.get(c).values(
            next(iter(first.values())), plan.batch))
    if any(COLUMNS.get(c).group == "robustness" for c in plan.columns):
        groups["robustness"] += explain_s * settings.perturbations
    if "focus" in plan.columns:
        groups["localisation"] += explain_s * 4  # mosaics have 4× the pixels
    return Estimate({k: v * b for k, v in groups.items()}, explain_s * b, 1)


def _timed(run: Callable[[], object]) -> float:
    """Seconds `run()` takes."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


Truth = tuple  # (boxes, masks, mosaics), each None where not given


def _plan(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, truth: Truth, how: How,
          metrics: Sequence[str] | str | None, settings: Settings, index: torch.Tensor | None = None) -> Plan:
    """Check a leaderboard's inputs and put them together."""
    boxes, masks, mosaics = truth
    device = device_of(model)
    if images.dim() != 4 or targets.shape != (images.shape[0],):
        raise InputError(f"images must be (B, C, H, W) with targets (B,), got {tuple(images.shape)} and "
                         f"{tuple(targets.shape)}")
    names = select(metrics) if metrics is None or isinstance(metrics, str) else list(metrics)
    for name in names:
        COLUMNS.get(name)
    have = {"": True, "boxes": boxes is not None, "masks": masks is not None or boxes is not None,
            "mosaics": mosaics is not None}
    skipped = {n: f"needs {COLUMNS.get(n).needs}" for n in names if not have[COLUMNS.get(n).needs]}
    names = [n for n in names if n not in skipped]
    if not names:
        raise InputError(f"no metric can be computed with the ground truth given (left out: {sorted(skipped)})")
    if not rows_of(how, model) and not settings.calibration:
        raise InputError("no method to score")
    images, targets = images.to(device), targets.to(device)
    if masks is None and boxes is not None:
        masks = loc.box_masks(boxes.to(device), tuple(images.shape[-2:]))
    batch = Batch(images, targets, class_probability(model, targets), correct_class(model, targets),
                  None if boxes is None else boxes.to(device), None if masks is None else masks.to(device),
                  settings.tolerance, settings.step, settings.batch_size, settings.seed, settings.top_k,
                  draws.indices(index, images.shape[0]))
    return Plan(names, batch, explainers(model, how, settings.calibration, settings.seed),
                joint_explainer(model, how, settings.calibration, settings.seed), skipped)


SHARED_PASSES = ("faith_corr", "infidelity")  # their perturbed inputs do not depend on the map


def _passes_shared_by_maps(columns: Sequence[str], maps: Mapping[str, torch.Tensor],
                           batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
    """The columns whose model passes do not depend on the map (faithfulness correlation's subsets, infidelity's
    perturbations), for every map at once: one set of passes per image (its own seed, `Batch.one`), not one per
    map — the same numbers as map by map."""
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in maps}
    for col in (c for c in columns if c in SHARED_PASSES):
        fn = COLUMNS.get(col).fn
        per_image = [fn({k: v[i : i + 1] for k, v in maps.items()}, batch.one(i)) for i in range(len(batch.images))]
        for k in maps:
            out[k][col] = torch.cat([p[k].reshape(1) for p in per_image]).double().cpu()
    return out


def _shared_columns(plan: Plan, maps: Mapping[str, torch.Tensor], settings: Settings, mosaics: Mosaics | None,
                    model: nn.Module, seconds: dict[str, float]) -> dict[str, dict[str, torch.Tensor]]:
    """Robustness and focus for every row, each from one explanation of all methods together."""
    batch = plan.batch
    robust = [c for c in plan.columns if COLUMNS.get(c).group == "robustness"]
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in maps}
    if robust:
        started = time.perf_counter()
        perturbed = rob.perturb(batch.images, settings.perturbations, settings.noise, settings.radius, settings.seed,
                                batch.index)
        scores = rob.score_robustness(plan.joint, lambda x: rob.logits_of(model, x), batch.images, batch.labels,
                                      perturbed, robust, maps=maps, index=batch.index)
        for key, values in scores.items():
            out[key].update(values)
        seconds["robustness"] = time.perf_counter() - started
    if "focus" in plan.columns:
        started = time.perf_counter()
        device = batch.images.device
        found = plan.joint(mosaics.images.to(device), mosaics.labels.to(device))
        for key, values in found.items():
            out.setdefault(key, {})["focus"] = loc.focus(values, mosaics.quadrants.to(device)).cpu()
        seconds["focus"] = time.perf_counter() - started
    return out
