"""The leaderboard: every applicable method × every ground-truth and faithfulness metric, with time per image.

Localisation metrics compare maps with the object's box and mask; faithfulness metrics ask the
model (through `class_probability`, a scorer for `attnscope.metrics.faithfulness`) how its
confidence in the explained class changes as pixels are removed, inserted or masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnscope import console
from attnscope.errors import InputError
from attnscope.explain import explain
from attnscope.explain.engine import model_guard
from attnscope.metrics import faithfulness as faith
from attnscope.metrics import localisation as loc
from attnscope.metrics.similarity import mean_ci
from attnscope.registry import METHODS, Registry
from attnscope.sanity.calibration import CALIBRATIONS

POST_HOC_AND_INTRINSIC = ("cam", "gradient", "perturbation", "intrinsic", "transformer")


def class_probability(model: nn.Module, classes: torch.Tensor, batch_size: int | None = None) -> faith.Scorer:
    """A scorer `f(x, source) -> softmax(model(x))[class of source image]`, run in eval mode without grad."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    classes = classes.to(device)

    def score(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        with model_guard(model), torch.no_grad():
            probs = model(x.to(device)).softmax(dim=1)
        return probs.gather(1, classes[source.to(device)][:, None])[:, 0]

    return score


class Truth:
    """What the metrics may read for a batch: images (B, C, H, W), boxes (B, 4), masks (B, H, W), a scorer."""

    def __init__(self, images: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, scorer: faith.Scorer,
                 tolerance: float, step: int | None, batch_size: int) -> None:
        self.images, self.boxes, self.masks, self.scorer = images, boxes, masks, scorer
        self.tolerance, self.step, self.batch_size = tolerance, step, batch_size
        self._masked: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None

    def masked(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Y, O) of Grad-CAM++'s Average Drop, computed once for the maps last asked about."""
        if self._masked is None or self._masked[0] is not maps:
            self._masked = (maps, faith.masked_scores(self.scorer, self.images, maps, self.batch_size))
        return self._masked[1]


METRICS: Registry[Callable[[torch.Tensor, Truth], torch.Tensor]] = Registry("leaderboard metric")
_register = METRICS.register
_register("pointing", lambda m, t: loc.pointing_game(m, t.boxes, t.tolerance))
_register("energy_box", lambda m, t: loc.energy_in_box(m, t.boxes))
_register("mass_mask", lambda m, t: loc.relevance_mass(m, t.masks))
_register("rank_mask", lambda m, t: loc.relevance_rank(m, t.masks))
_register("deletion_zero", lambda m, t: faith.deletion_auc(t.scorer, t.images, m, "zero", t.step, t.batch_size))
_register("deletion_blur", lambda m, t: faith.deletion_auc(t.scorer, t.images, m, "blur", t.step, t.batch_size))
_register("insertion_blur", lambda m, t: faith.insertion_auc(t.scorer, t.images, m, "blur", t.step, t.batch_size))
_register("insertion_zero", lambda m, t: faith.insertion_auc(t.scorer, t.images, m, "zero", t.step, t.batch_size))
_register("avg_drop_pct", lambda m, t: 100 * faith.drop(*t.masked(m)))
_register("increase_pct", lambda m, t: 100 * faith.increase(*t.masked(m)))
HIGHER_IS_BETTER = {"deletion_zero": False, "deletion_blur": False, "avg_drop_pct": False}


def applicable_methods(model: nn.Module, kinds: Sequence[str] = POST_HOC_AND_INTRINSIC) -> list[str]:
    """Registered methods of `kinds` that apply to `model`."""
    return [m for m in METHODS if METHODS.get(m).kind in kinds and METHODS.get(m).applies(model) is None]


def leaderboard(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    calibration: Sequence[str] = ("random", "sobel"),
    tolerance: float = 0.0,
    step: int | None = None,
    batch_size: int = 256,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per method (maps for the true `labels`): the mean of each metric over the images, and
    `ms_per_image` (the method's explain time). `methods=None`: every method that applies to `model`.
    Calibration maps (a random map, the input's Sobel edges) are scored as extra rows."""
    methods = applicable_methods(model) if methods is None else list(methods)
    metrics = METRICS.names() if metrics is None else list(metrics)
    for name in metrics:
        METRICS.get(name)
    if not methods:
        raise InputError("no method to score")
    scorer = class_probability(model, labels)
    truth = Truth(images, boxes, masks, scorer, tolerance, step, batch_size)
    rows = []
    with console.progress(len(methods) + len(calibration), "leaderboard", progress) as bar:
        for name in [*methods, *calibration]:
            started = time.perf_counter()
            if name in calibration:
                maps = {name: CALIBRATIONS.get(name)(images, 0).float()}
                kind = "calibration"
            else:
                opts = {name: options[name]} if options and name in options else None
                maps = {k: v.values.cpu() for k, v in explain(model, images, name, labels, options=opts).items()}
                kind = METHODS.get(name).kind
            seconds = time.perf_counter() - started
            for key, values in maps.items():
                row: dict[str, Any] = {"method": key, "kind": kind}
                for metric in metrics:
                    row[metric] = mean_ci(METRICS.get(metric)(values, truth))[0]
                row["ms_per_image"] = 1000 * seconds / images.shape[0]
                rows.append(row)
            bar.advance(1, method=name)
    return rows
