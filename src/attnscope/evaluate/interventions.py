"""Ground-truth interventions on generated scenes: remove each object (or the decoy patch) and see
what the model does, then ask whether each map's mass per object ranks the objects as the model does.

What FunnyBirds (Hesse et al., ICCV 2023) does with rendered 3-D parts, done offline on our own
generators: ClutteredDigits and DigitScenes draw every image from a seed, so the image *without*
an object is drawn exactly (`ClutteredDigits.without`, `DigitScenes.without`: same background, same
noise), not inpainted. For the explained class c of each image and each part j:

- drop_j = p_c(x) − p_c(x without j), the model's probability falling when j is gone;
- mass_j = Σ_{region j} M⁺ / Σ M⁺, the share of the map's positive mass on the pixels j changes;
- single deletion: Spearman correlation over the parts of an image between mass_j and drop_j
  (FunnyBirds' "single deletion" check), and whether the part with most mass is the one whose
  removal hurts most ("top part");
- background mass: 1 − Σ_j mass_j, the share outside every part (FunnyBirds' background independence:
  removing background changes nothing, so a faithful map puts little there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from attnscope import console
from attnscope.errors import InputError
from attnscope.evaluate.leaderboard import joint_explainer
from attnscope.evaluate.robustness import logits_of
from attnscope.explain import Explainer, as_explainer
from attnscope.metrics.similarity import mean_ci, spearman
from attnscope.modules import device_of

BACKGROUND = "background"


@dataclass(frozen=True)
class Scenes:
    """Images (N, C, H, W) made of parts: their counterfactuals without each part (N, P, C, H, W),
    the pixels each part changes (N, P, H, W), whether it is there (N, P), its name, and the class
    it shows (N, P) long (−1 for a part that shows none, e.g. fragments)."""

    images: torch.Tensor
    removed: torch.Tensor
    regions: torch.Tensor
    present: torch.Tensor
    names: list[str]
    classes: torch.Tensor
    labels: torch.Tensor  # (N,) the class of each image (ClutteredDigits: its digit; DigitScenes: -1)


def clutter_scenes(dataset: Dataset, n: int, progress: bool = False) -> Scenes:
    """The first `n` images of a ClutteredDigits data set, parts: digit, fragments (and decoy)."""
    parts = [p for p in dataset.PARTS if p != "decoy" or dataset.decoy]
    images, removed, regions, classes, labels = [], [], [], [], []
    for i in _each(_count(dataset, n), "scenes", progress):
        sample = dataset[i]
        gone = torch.stack([dataset.without(i, p) for p in parts])  # (P, C, H, W)
        changed = (gone - sample.image[None]).abs().sum(1) > 0  # (P, H, W) the pixels each part draws
        images.append(sample.image)
        removed.append(gone)
        regions.append(changed)
        decoy_class = sample.label if dataset.split == "train" else -1  # its colour encodes the label in train
        classes.append(torch.tensor([{"digit": sample.label, "decoy": decoy_class}.get(p, -1) for p in parts]))
        labels.append(sample.label)
    regions_t = torch.stack(regions)
    return Scenes(torch.stack(images), torch.stack(removed), regions_t, regions_t.flatten(2).any(2), parts,
                  torch.stack(classes), torch.tensor(labels))


def digit_scenes(dataset: Dataset, n: int, progress: bool = False) -> Scenes:
    """The first `n` DigitScenes images; parts: each coloured digit (up to the most a scene has)."""
    count = _count(dataset, n)
    samples = [dataset[i] for i in _each(count, "scenes", progress)]
    p = max(len(s.objects) for s in samples)
    c, h, w = samples[0].image.shape
    removed = torch.zeros(count, p, c, h, w)
    regions = torch.zeros(count, p, h, w, dtype=torch.bool)
    classes = torch.full((count, p), -1, dtype=torch.long)
    for i, s in enumerate(samples):
        for k, obj in enumerate(s.objects):
            removed[i, k] = dataset.without(i, k)
            regions[i, k] = (removed[i, k] - s.image).abs().sum(0) > 0
            classes[i, k] = obj.digit
    return Scenes(torch.stack([s.image for s in samples]), removed, regions, regions.flatten(2).any(2),
                  [f"object {k + 1}" for k in range(p)], classes, torch.full((count,), -1, dtype=torch.long))


SCENES = {"clutter": clutter_scenes, "clutter-decoy": clutter_scenes, "scenes": digit_scenes}


@dataclass
class InterventionResult:
    """Per method: the per-image drop and mass of every part, and the summary checks."""

    names: list[str]
    drops: torch.Tensor  # (N, P) the model's probability drop when each part is removed
    present: torch.Tensor  # (N, P)
    part_rows: torch.Tensor  # (N, P) long: which row of `rows` each part is counted in
    rows: list[str]  # part groups, e.g. "digit (explained class)", "decoy", "fragments"
    mass: dict[str, torch.Tensor]  # method -> (N, P) share of positive mass per part
    background: dict[str, torch.Tensor]  # method -> (N,)
    meta: dict[str, Any]

    def summary(self) -> list[dict[str, Any]]:
        """One row per method: single deletion (Spearman of mass and drop over parts), top-part
        agreement and background mass, each the mean over images with its n."""
        out = []
        for method, mass in self.mass.items():
            rank = _rank_agreement(mass, self.drops, self.present)
            top = _top_agreement(mass, self.drops, self.present)
            row = {"method": method}
            for key, values in (("single_deletion", rank), ("top_part", top), ("background_mass",
                                                                                 self.background[method])):
                mean, low, high, n = mean_ci(values)
                row.update({key: mean, f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_n": n})
            out.append(row)
        return out

    def table(self, method: str) -> list[dict[str, Any]]:
        """Per part group: the mean probability drop when it is removed and the map's mean mass on it."""
        out = []
        for r, name in enumerate(self.rows):
            sel = self.present & (self.part_rows == r)
            out.append({"part": name, "drop": mean_ci(self.drops[sel])[0], "mass": mean_ci(self.mass[method][sel])[0],
                        "n": int(sel.sum())})
        out.append({"part": BACKGROUND, "drop": 0.0, "mass": mean_ci(self.background[method])[0],
                    "n": int(self.background[method].numel())})
        return out


def interventions(model: nn.Module, scenes: Scenes, how: Explainer | str | Sequence[str],
                  targets: str = "predicted", calibration: Sequence[str] = ("random", "sobel"),
                  forward_batch: int = 256, progress: bool = False) -> InterventionResult:
    """Remove each part of each scene and compare the model's probability drops with each map's mass
    per part (module docstring), the maps explained as `how` says. `targets`: "predicted" (the model's class
    for the full image) or "label" (ClutteredDigits' digit). `forward_batch`: images per forward of the drops."""
    how = as_explainer(how)
    if targets not in ("predicted", "label"):
        raise InputError(f"targets must be 'predicted' or 'label', got {targets!r}")
    device = device_of(model)
    images = scenes.images.to(device)
    n, p = scenes.present.shape
    logits = logits_of(model, images, forward_batch)
    if targets == "label":
        if bool((scenes.labels < 0).any()):
            raise InputError("these scenes have no image labels: use targets='predicted'")
        classes = scenes.labels.to(device)
    else:
        classes = logits.argmax(1)
    probs = logits.softmax(1).gather(1, classes[:, None])[:, 0]
    flat = scenes.removed.flatten(0, 1).to(device)
    with console.progress(2, "interventions", progress) as bar:
        moved = logits_of(model, flat, forward_batch).softmax(1).view(n, p, -1)
        bar.advance(1, step="drops")
        maps = joint_explainer(model, how, calibration, 0)(images, classes)
        bar.advance(1, step="maps")
    drops = (probs[:, None] - moved.gather(2, classes.view(n, 1, 1).expand(n, p, 1))[..., 0]).double().cpu()
    drops = torch.where(scenes.present, drops, torch.zeros_like(drops))
    part_rows, rows = _groups(scenes, classes.cpu())
    regions = scenes.regions.to(device)
    mass, background = {}, {}
    for name, m in maps.items():
        pos = m.double().clamp_min(0)
        total = pos.flatten(1).sum(1).clamp_min(1e-300)  # (N,)
        share = (pos[:, None] * regions).flatten(2).sum(2) / total[:, None]  # (N, P)
        mass[name] = share.cpu()
        background[name] = (1 - (pos * regions.any(1)).flatten(1).sum(1) / total).cpu()
    meta = {"images": n, "targets": targets, "parts": scenes.names, "methods": list(how.methods),
            "calibration": list(calibration), "accuracy_on_labels": None if bool((scenes.labels < 0).any()) else
            float((logits.argmax(1).cpu() == scenes.labels).double().mean())}
    return InterventionResult(scenes.names, drops, scenes.present, part_rows, rows, mass, background, meta)


def _groups(scenes: Scenes, classes: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Each part's row name: its name, or for a part showing a class "<name> (explained class)" /
    "<name> (other class)"; parts named "object k" (DigitScenes) share the row "digit"."""
    rows: list[str] = []
    index = torch.zeros(scenes.present.shape, dtype=torch.long)
    for i in range(scenes.present.shape[0]):
        for k, name in enumerate(scenes.names):
            if not scenes.present[i, k]:
                continue  # a scene with fewer objects than the most: no row for the missing one
            base = "digit" if name.startswith("object ") else name
            c = int(scenes.classes[i, k])
            label = base if c < 0 else f"{base} ({'explained' if c == int(classes[i]) else 'other'} class)"
            if label not in rows:
                rows.append(label)
            index[i, k] = rows.index(label)
    return index, rows


def _rank_agreement(mass: torch.Tensor, drops: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Spearman over the present parts of each image (NaN with fewer than two, or a constant side). (N,)."""
    out = torch.full((mass.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(mass.shape[0]):
        keep = present[i]
        if int(keep.sum()) >= 2:
            out[i] = spearman(mass[i, keep].double(), drops[i, keep].double())
    return out


def _top_agreement(mass: torch.Tensor, drops: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """1 where the part with most mass is the part whose removal drops the probability most. (N,)."""
    low = torch.full_like(mass, -torch.inf, dtype=torch.float64)
    a = torch.where(present, mass.double(), low).argmax(1)
    b = torch.where(present, drops.double(), low).argmax(1)
    return (a == b).double()


def _each(n: int, what: str, progress: bool):
    """range(n), advancing a progress bar."""
    with console.progress(n, what, progress) as bar:
        for i in range(n):
            yield i
            bar.advance(1)


def _count(dataset: Dataset, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the number of images must be a positive integer, got {n!r}")
    return min(n, len(dataset))
